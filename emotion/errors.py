"""Errors with messages meant for the person using the app, not for a traceback."""


class EmotionError(Exception):
    """Base class: the message is safe and useful to show to a user."""


class InputError(EmotionError):
    """The image could not be read or is not acceptable."""


class ModelError(EmotionError):
    """A model could not be loaded or does not fit the seven emotions."""


class RemoteError(EmotionError):
    """The Hugging Face Inference API call failed."""
