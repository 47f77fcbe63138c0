"""glibc's memory allocator, set up for a server that makes the same large temporaries request after request.

A detection makes dozens of numpy arrays of 0.1-4 MB (a pyramid level, 300 crops' window sums), and a
request decodes, draws and encodes a photo. glibc gives allocations above its mmap threshold (128 kB at
first, then raised to the largest block freed so far) pages of their own, and hands the top of the heap
back to the kernel whenever more than its trim threshold (twice that) is free there: so every request's
temporaries came back as fresh pages, each paid for with a page fault (several microseconds in this
project's VM). Keeping blocks of up to 32 MB on the heap, and up to 64 MB of free heap per arena, lets one
request reuse the last one's pages. Measured on two cores: 300 crops of 24 px from the Apollo portrait
5.4-6.4 -> 3.9-4.0 ms; the app's server CPU per Apollo request 136 -> 122 ms with one caller and 121 -> 116
with four (app.py side by side with and without, gradio_client callers, rounds in turn); its memory after
the rounds 954 vs 959 MB.

Only a server process sets this up (app.py, the bench's do-nothing app), once at start: it is a setting of
the whole process, which a library imported elsewhere has no business changing. The server's photo workers
(emotion.serving.workers) set it up as they start when the server did: the detections run there.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # mallopt's parameter numbers (glibc's malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # blocks up to this size come from the heap: the most glibc accepts on 64 bits
TRIM_THRESHOLD = 64 * 2**20  # free memory at an arena's top beyond this goes back to the kernel
_tuned = False  # tune() has set the thresholds in this process


def tune() -> bool:
    """Sets glibc's mmap and trim thresholds for this process; True when set. Nothing is changed off glibc
    (macOS, Windows, musl) or when any MALLOC_* variable is set (glibc's own, or another allocator's): whoever
    set it decides."""
    if not sys.platform.startswith("linux"):
        return False
    if any(name.startswith("MALLOC_") for name in os.environ):
        log.info("glibc's allocator left as the MALLOC_ variables set it")
        return False
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # only glibc has it (and mallopt as documented here)
        return False
    done = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    done = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and done
    if not done:
        log.warning("glibc refused the allocator settings: its defaults stay")
    global _tuned
    _tuned = _tuned or done
    return done


def tuned() -> bool:
    """Whether tune() has set the thresholds in this process."""
    return _tuned
