"""Python's cyclic garbage collector runs only on the GUI thread.

Left to itself, the collector runs in whichever thread happens to allocate when a generation fills:
often paho's network thread or a worker. When that collection frees a cycle holding Qt widgets
(a closed dialog, a menu whose actions' lambdas refer back to it), their C++ destructors run in
that thread while Shiboken defers other deletions to the GUI thread; the two then wait on each
other (the thread holds a Qt signal-slot mutex and wants the GIL, the GUI thread holds the GIL and
wants the mutex) and the window freezes for good. Seen once in the GUI tests (a MainWindow's menus
collected from paho's thread). pyqtgraph's GarbageCollector is the well-known cure: automatic
collection off, the same generation thresholds checked on a GUI-thread timer.
"""

from __future__ import annotations

import gc

from pyqtgraph.util.garbage_collector import GarbageCollector

# How often the GUI thread checks the generation counts (the thresholds decide whether to collect):
# often enough that garbage made by workers between two checks stays small.
GC_CHECK_INTERVAL_S = 1.0

_collector: GarbageCollector | None = None


def collect_on_gui_thread() -> GarbageCollector:
    """Switch automatic collection off and collect on a GUI-thread timer (once per process; call it
    on the GUI thread after the QApplication exists)."""
    global _collector
    if _collector is None:
        _collector = GarbageCollector(interval=GC_CHECK_INTERVAL_S)
    return _collector


def back_to_automatic_collection() -> None:
    """Collect what is left on this (GUI) thread, then let Python collect automatically again: for a
    process that goes on without a GUI (a test run)."""
    global _collector
    if _collector is not None:
        _collector.timer.stop()
        _collector = None
    gc.collect()
    gc.enable()
