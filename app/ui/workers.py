"""Long jobs off the GUI thread: a generic Worker run in its own QThread.

The job is a plain function `fn(progress, cancel, *args)`: `progress(percent, text)` may be called
from the worker thread (it becomes a queued signal), `cancel` is a threading.Event the job checks
cooperatively (superqt's pattern). Signals: started, progress(int, str), result(object),
error(str), finished. A failure never escapes as a traceback: TinyMLOpsError becomes its message,
anything else "unexpected error: ..." (and the traceback goes to the log).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

log = logging.getLogger(__name__)

# A worker asked to stop at application exit gets this long to notice its cancel flag.
QUIT_WAIT_MS = 5000

JobFn = Callable[..., Any]


class Worker(QObject):
    """Runs `fn(progress, cancel, *args, **kwargs)` in a QThread; see the module docstring."""

    started = Signal()
    progress = Signal(int, str)
    result = Signal(object)
    error = Signal(str)
    finished = Signal()

    def __init__(self, fn: JobFn, *args: Any, name: str = "worker", **kwargs: Any) -> None:
        super().__init__()
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.name = name
        self.cancel_event = threading.Event()
        self.thread: QThread | None = None
        self.failed: str | None = None
        self.value: Any = None
        self.done = False

    def cancel(self) -> None:
        """Ask the job to stop at its next check (cooperative: it finishes what it is doing)."""
        self.cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def _report(self, percent: int, text: str = "") -> None:
        self.progress.emit(int(max(0, min(100, percent))), str(text))

    @Slot()
    def run(self) -> None:
        from app.domain.errors import Cancelled, TinyMLOpsError

        self.started.emit()
        try:
            self.value = self.fn(self._report, self.cancel_event, *self.args, **self.kwargs)
            self.result.emit(self.value)
        except Cancelled as exc:
            self.failed = f"cancelled: {exc}"
            self.error.emit(self.failed)
        except TinyMLOpsError as exc:
            log.warning("%s failed: %s", self.name, exc)
            self.failed = str(exc)
            self.error.emit(self.failed)
        except Exception as exc:  # a bug: shown as a sentence, logged with its traceback
            log.exception("%s failed", self.name)
            self.failed = f"unexpected error: {type(exc).__name__}: {exc}"
            self.error.emit(self.failed)
        finally:
            self.done = True
            self.finished.emit()

    def start(self) -> Worker:
        """Run in a fresh QThread. The Worker itself stays in the GUI thread, so its signals, emitted
        from the job's thread, are queued to the GUI thread: connected slots and lambdas run there."""
        thread = _JobThread(self)
        thread.setObjectName(self.name)
        self.thread = thread
        _LIVE.add(self)
        thread.finished.connect(lambda: _LIVE.discard(self))
        thread.start()
        return self

    def wait(self, ms: int = QUIT_WAIT_MS) -> bool:
        return self.thread.wait(ms) if self.thread is not None else True


class _JobThread(QThread):
    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self.worker = worker

    def run(self) -> None:
        self.worker.run()


# Workers that are running: kept referenced so Python never collects a QThread that still runs.
_LIVE: set[Worker] = set()


def run_in_thread(fn: JobFn, *args: Any, name: str = "worker", on_result: Callable | None = None,
                  on_error: Callable | None = None, on_progress: Callable | None = None,
                  on_finished: Callable | None = None, **kwargs: Any) -> Worker:
    """Create, wire and start a Worker in one call."""
    worker = Worker(fn, *args, name=name, **kwargs)
    if on_result:
        worker.result.connect(on_result)
    if on_error:
        worker.error.connect(on_error)
    if on_progress:
        worker.progress.connect(on_progress)
    if on_finished:
        worker.finished.connect(on_finished)
    return worker.start()


# ------------------------------------------------------------------ jobs in a child process

# How often the relay thread looks at the child's queue and the cancel flag.
PROCESS_POLL_S = 0.1
# A cancelled child gets this long to stop at its next check before it is terminated.
PROCESS_CANCEL_GRACE_S = 10.0


def _child_main(fn: JobFn, args: tuple, queue, stop) -> None:
    """Runs in the child: relay progress, then the result or the error as plain, picklable data."""
    from app.domain.errors import Cancelled, TinyMLOpsError

    def progress(percent: int, text: str = "") -> None:
        queue.put(("progress", int(percent), str(text)))

    try:
        queue.put(("result", fn(progress, stop, *args)))
    except Cancelled as exc:
        queue.put(("error", "cancelled", str(exc)))
    except TinyMLOpsError as exc:
        queue.put(("error", "domain", str(exc)))
    except BaseException as exc:  # reported to the parent as a sentence; traceback in the child's log
        logging.getLogger(__name__).exception("job failed in the child process")
        queue.put(("error", "unexpected", f"{type(exc).__name__}: {exc}"))


def _process_job(progress, cancel: threading.Event, fn: JobFn, args: tuple, name: str):
    """The Worker's job when the real work runs in a spawned child process (see run_in_process)."""
    import multiprocessing as mp
    import queue as queue_mod
    import time

    from app.domain.errors import Cancelled, TinyMLOpsError

    ctx = mp.get_context("spawn")  # a fresh interpreter: no threads or locks inherited from the GUI
    messages = ctx.Queue()
    stop = ctx.Event()
    # not a daemon: the job may start children of its own (TFLM probes fork)
    proc = ctx.Process(target=_child_main, args=(fn, args, messages, stop), name=f"tinymlops-{name}")
    proc.start()
    cancel_deadline = None
    try:
        while True:
            try:
                kind, *payload = messages.get(timeout=PROCESS_POLL_S)
            except queue_mod.Empty:
                if cancel.is_set() and cancel_deadline is None:
                    stop.set()
                    cancel_deadline = time.monotonic() + PROCESS_CANCEL_GRACE_S
                if cancel_deadline is not None and time.monotonic() > cancel_deadline:
                    raise Cancelled(f"{name} cancelled (stopped)") from None
                if not proc.is_alive() and messages.empty():
                    raise TinyMLOpsError(f"the {name} process ended unexpectedly (exit code {proc.exitcode})") \
                        from None
                continue
            if kind == "progress":
                progress(*payload)
            elif kind == "result":
                return payload[0]
            else:
                what, message = payload
                if what == "cancelled":
                    raise Cancelled(message)
                if what == "domain":
                    raise TinyMLOpsError(message)
                raise RuntimeError(message)
    finally:
        proc.join(PROCESS_CANCEL_GRACE_S if not cancel.is_set() else 1.0)
        if proc.is_alive():
            proc.terminate()
            proc.join(1.0)


def run_in_process(fn: JobFn, *args: Any, name: str = "job", on_result: Callable | None = None,
                   on_error: Callable | None = None, on_progress: Callable | None = None,
                   on_finished: Callable | None = None) -> Worker:
    """Like run_in_thread, but `fn` (a picklable module-level function, Qt-free, with picklable
    arguments and result) runs in a spawned child process. For CPU-heavy jobs that hold the
    interpreter lock (TensorFlow import, training): the GUI's event loop keeps its own interpreter."""
    return run_in_thread(_process_job, fn, args, name, name=name, on_result=on_result, on_error=on_error,
                         on_progress=on_progress, on_finished=on_finished)


def stop_all(wait_ms: int = QUIT_WAIT_MS) -> None:
    """At exit: cancel every running worker and wait a little for each."""
    for worker in list(_LIVE):
        worker.cancel()
    for worker in list(_LIVE):
        worker.wait(wait_ms)
