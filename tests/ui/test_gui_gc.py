"""Cyclic garbage is collected on the GUI thread only (app/ui/gui_gc.py): a collection that frees Qt
widgets in paho's thread deadlocked the GUI test run once (the thread held a Qt mutex and wanted the
GIL, the GUI thread the reverse). Here a cycle made garbage while a worker thread allocates enough to
fill generation 0 many times over must still be freed on the GUI thread."""

from __future__ import annotations

import gc
import threading

from tests.ui.conftest import wait_for

# Containers the worker allocates and keeps: generation 0's threshold (700) many times over.
WORKER_ALLOCATIONS = 200_000
# The GUI thread's timer checks once a second; a loaded machine gets this long.
FREED_TIMEOUT_S = 30.0


freed_on: list[str] = []  # the names of the threads that freed a _Node


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it

    def __del__(self) -> None:
        freed_on.append(threading.current_thread().name)


def test_cycles_are_freed_on_the_gui_thread_while_a_worker_allocates(qtbot):
    assert not gc.isenabled()  # the fixture (as the application) switched automatic collection off
    freed_on.clear()
    _Node()  # garbage, in a cycle
    done = threading.Event()
    kept: list[list[int]] = []

    def allocate() -> None:
        # container objects count towards generation 0; keeping them makes the count stay above the
        # threshold, so the GUI thread's next check collects (automatic collection would have run here)
        kept.extend([i] for i in range(WORKER_ALLOCATIONS))
        done.set()

    worker = threading.Thread(target=allocate, name="allocating-worker")
    worker.start()
    wait_for(qtbot, done.is_set, FREED_TIMEOUT_S, "the worker's allocations")
    worker.join()
    wait_for(qtbot, lambda: bool(freed_on), FREED_TIMEOUT_S, "the cycle to be collected")
    assert freed_on == [threading.main_thread().name]
