"""Gradio's queue, set up as this app runs it: less of Gradio's own bookkeeping per request and while idle."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

# Gradio's queue looks for new work every millisecond while it has none (on Linux): about 9% of a core on an
# idle server (measured), and a wake-up every millisecond beside the requests it serves. Every 5 ms halves that;
# a request waits 2.5 ms more on average to start.
POLL_S = 0.005


def queue(demo, concurrency: int, max_size: int | None = None):
    """``demo.queue(...)`` with this app's settings; the do-nothing app of emotion.bench uses it too, so both
    run the same Gradio."""
    # Gradio recomputes a pandas summary of up to 10,000 past events after every event, for its monitoring
    # page, which this app does not turn on: 4 ms of CPU per request at first, 17 ms after 10,000 requests
    # (measured). Once every 1,000 events is plenty. Read when the queue is made, so set just before.
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")
    demo.queue(default_concurrency_limit=concurrency, max_size=max_size)
    # Not a public setting of Gradio's: an attribute of its queue (gradio 6.31). Kept if it is missing.
    events = getattr(demo, "_queue", None)
    if events is not None and hasattr(events, "sleep_when_free"):
        events.sleep_when_free = max(events.sleep_when_free, POLL_S)
    else:
        log.warning("Gradio's queue has no sleep_when_free: it polls at its own rate")
    return demo
