"""Small waiting helpers for transport tests (polling with a deadline, never a bare sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable

# Loopback brokers and ptys answer in milliseconds; 10 s only bounds a failing test on a loaded box.
WAIT_S = 10.0


def wait_until(predicate: Callable[[], object], timeout: float = WAIT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
