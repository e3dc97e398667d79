"""Long jobs off the GUI thread: a generic Worker run in its own QThread.

The job is a plain function `fn(progress, cancel, *args)`: `progress(percent, text)` or
`progress(DeviceProgress(...))` may be called from the worker thread (it becomes a queued signal),
`cancel` is a threading.Event the job checks cooperatively (superqt's pattern). Signals: started,
progress(object) with a typed app.ui.progress object, result(object), errored(object) with the
exception itself (a Cancelled one when the job stopped on request), finished. Receivers decide on
the exception's type, never on its text; `error_text(exc)` is the one sentence to show. A failure
never escapes as a traceback: a bug is logged with its traceback and shown as
"unexpected error: ...". Jobs run in a child process (`run_in_process`) report the same objects:
progress dataclasses and exceptions are pickled across.
"""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

from app.domain.errors import Cancelled, TinyMLOpsError
from app.ui.progress import DeviceProgress, JobProgress, Progress

log = logging.getLogger(__name__)

# A worker asked to stop at application exit gets this long to notice its cancel flag.
QUIT_WAIT_MS = 5000

JobFn = Callable[..., Any]


def error_text(exc: BaseException) -> str:
    """The sentence to show for a job's failure: a domain error's own message, a bug named as one."""
    if isinstance(exc, Cancelled):
        return f"cancelled: {exc}"
    if isinstance(exc, TinyMLOpsError):
        return str(exc)
    return f"unexpected error: {type(exc).__name__}: {exc}"


def _as_progress(progress: int | Progress, text: str = "") -> Progress:
    if isinstance(progress, (JobProgress, DeviceProgress)):
        return progress
    return JobProgress(int(max(0, min(100, progress))), str(text))


class Worker(QObject):
    """Runs `fn(progress, cancel, *args, **kwargs)` in a QThread; see the module docstring."""

    started = Signal()
    progress = Signal(object)  # JobProgress | DeviceProgress
    result = Signal(object)
    errored = Signal(object)  # the exception the job raised
    finished = Signal()

    def __init__(self, fn: JobFn, *args: Any, name: str = "worker", **kwargs: Any) -> None:
        super().__init__()
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.name = name
        self.cancel_event = threading.Event()
        self.thread: QThread | None = None
        self.exception: BaseException | None = None
        self.failed: str | None = None  # error_text(self.exception), for display
        self.value: Any = None
        self.done = False

    def cancel(self) -> None:
        """Ask the job to stop at its next check (cooperative: it finishes what it is doing)."""
        self.cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def _report(self, progress: int | Progress, text: str = "") -> None:
        self.progress.emit(_as_progress(progress, text))

    @Slot()
    def run(self) -> None:
        self.started.emit()
        try:
            self.value = self.fn(self._report, self.cancel_event, *self.args, **self.kwargs)
            self.result.emit(self.value)
        except Exception as exc:
            if isinstance(exc, Cancelled):
                log.info("%s cancelled: %s", self.name, exc)
            elif isinstance(exc, TinyMLOpsError):
                log.warning("%s failed: %s", self.name, exc)
            else:  # a bug: shown as a sentence, logged with its traceback
                log.exception("%s failed", self.name)
            self.exception, self.failed = exc, error_text(exc)
            self.errored.emit(exc)
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
        # weakly: a slot holding the worker, kept by the thread the worker holds, is a cycle through
        # C++ that Python never collects (each finished worker and its result stayed in memory)
        thread.finished.connect(functools.partial(_thread_finished, weakref.ref(self)))
        thread.start()
        return self

    def wait(self, ms: int = QUIT_WAIT_MS) -> bool:
        return self.thread.wait(ms) if self.thread is not None else True


class _JobThread(QThread):
    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self._worker = weakref.ref(worker)  # _LIVE holds it while it runs

    def run(self) -> None:
        worker = self._worker()
        if worker is not None:
            worker.run()


def _thread_finished(ref: weakref.ref) -> None:
    """A worker's thread ended: let go of the worker (and so of its thread and result)."""
    worker = ref()
    if worker is None:
        return
    if worker.thread is not None:
        worker.thread.wait()  # `finished` comes just before the thread ends: never free a running QThread
    _LIVE.discard(worker)


# Workers that are running: kept referenced so Python never collects a QThread that still runs.
_LIVE: set[Worker] = set()


def run_in_thread(fn: JobFn, *args: Any, name: str = "worker", on_result: Callable | None = None,
                  on_error: Callable[[BaseException], None] | None = None,
                  on_progress: Callable[[Progress], None] | None = None,
                  on_finished: Callable | None = None, **kwargs: Any) -> Worker:
    """Create, wire and start a Worker in one call (`on_error` gets the exception)."""
    worker = Worker(fn, *args, name=name, **kwargs)
    if on_result:
        worker.result.connect(on_result)
    if on_error:
        worker.errored.connect(on_error)
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


def _picklable(exc: BaseException) -> BaseException:
    """`exc` itself when it survives pickling (every TinyMLOpsError does), else a RuntimeError
    naming it: an exception from a third-party library may not rebuild from its args."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _child_main(fn: JobFn, args: tuple, queue, stop) -> None:
    """Runs in the child: relay progress objects, then the result or the exception."""

    def progress(value: int | Progress, text: str = "") -> None:
        queue.put(("progress", _as_progress(value, text)))

    try:
        queue.put(("result", fn(progress, stop, *args)))
    except BaseException as exc:  # re-raised in the parent; a bug's traceback goes to the child's log
        if not isinstance(exc, TinyMLOpsError):
            logging.getLogger(__name__).exception("job failed in the child process")
        if not isinstance(exc, Exception):  # SystemExit, KeyboardInterrupt: not for the parent to re-raise
            exc = RuntimeError(f"{type(exc).__name__}: {exc}")
        exc.__traceback__ = None  # tracebacks do not pickle
        queue.put(("error", _picklable(exc)))


def _process_job(progress, cancel: threading.Event, fn: JobFn, args: tuple, name: str):
    """The Worker's job when the real work runs in a spawned child process (see run_in_process)."""
    import multiprocessing as mp
    import queue as queue_mod
    import time

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
                progress(payload[0])
            elif kind == "result":
                return payload[0]
            else:
                raise payload[0]
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
