"""Run a long command's work in a thread so that Ctrl-C cancels it cleanly.

`deploy` aborts a transfer on the device (XFER_ABORT, a "cancelled" history row) and `firmware flash`
stops its tool instead of abandoning either half-way: the work watches a cancel Event, the main
thread only waits. It waits on an Event, not Thread.join: before Python 3.13 a join interrupted by
Ctrl-C returns at once ever after (CPython gh-90882).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

# The main thread wakes this often while the work runs (Ctrl-C is handled between waits).
WAIT_POLL_S = 0.2
# After Ctrl-C, time the work gets to stop (abort on the device, stop the tool) before the command exits.
CANCEL_GRACE_S = 5.0

T = TypeVar("T")


def run_cancellable(work: Callable[[threading.Event], T], name: str, cancel: threading.Event | None = None) -> T:
    """`work(cancel)` in a daemon thread; its result, or its exception raised here. Ctrl-C sets
    `cancel`, gives the work CANCEL_GRACE_S to stop, and raises KeyboardInterrupt."""
    cancel = cancel or threading.Event()
    finished = threading.Event()
    box: dict = {}

    def run() -> None:
        try:
            box["result"] = work(cancel)
        except BaseException as exc:  # handed to the main thread
            box["error"] = exc
        finally:
            finished.set()

    threading.Thread(target=run, name=name, daemon=True).start()
    try:
        while not finished.wait(WAIT_POLL_S):
            pass
    except KeyboardInterrupt:
        cancel.set()
        finished.wait(CANCEL_GRACE_S)
        raise
    if "error" in box:
        raise box["error"]
    return box["result"]
