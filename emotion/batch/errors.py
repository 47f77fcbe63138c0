"""The one error the bulk command reports as a message (exit status 2) instead of a traceback."""

from emotion.errors import EmotionError


class BatchError(EmotionError):
    """A problem with the command's arguments or its output: a missing SOURCE, an unwritable --out..."""
