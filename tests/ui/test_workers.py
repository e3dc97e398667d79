"""Exceptions and progress cross the worker boundary as objects (thread and child process alike):
receivers decide on types, never on the text of a message."""

from __future__ import annotations

from app.domain.errors import Cancelled, DataError
from app.ui import workers
from app.ui.progress import DeviceProgress, JobProgress

from .conftest import wait_for

# A thread job finishes at once; a spawned child imports the app (PySide6, numpy) first.
THREAD_TIMEOUT_S = 30.0
PROCESS_TIMEOUT_S = 120.0


def _failing_job(progress, cancel, code: int):
    """Module level: picklable, so it also runs in a spawned child."""
    progress(40, "halfway")
    progress(DeviceProgress("sim-001", 512, 1024))
    raise DataError("too few windows", code=code)


def _cancelled_job(progress, cancel):
    raise Cancelled("recording cancelled; nothing was stored")


def _run(qtbot, runner, fn, *args, timeout_s: float):
    seen: dict[str, list] = {"errored": [], "progress": []}
    worker = runner(fn, *args, name="probe", on_error=seen["errored"].append, on_progress=seen["progress"].append)
    wait_for(qtbot, lambda: worker.done and len(seen["errored"]) == 1, timeout_s, "the worker's error")
    return worker, seen


def test_thread_worker_emits_the_exception_and_typed_progress(qtbot):
    worker, seen = _run(qtbot, workers.run_in_thread, _failing_job, 7, timeout_s=THREAD_TIMEOUT_S)
    exc = seen["errored"][0]
    assert isinstance(exc, DataError) and exc.code == 7 and str(exc) == "too few windows"
    assert worker.exception is exc and worker.failed == "too few windows"
    wait_for(qtbot, lambda: len(seen["progress"]) == 2, THREAD_TIMEOUT_S, "both progress reports")
    assert seen["progress"] == [JobProgress(40, "halfway"), DeviceProgress("sim-001", 512, 1024)]
    assert seen["progress"][1].percent == 50


def test_a_cancelled_job_errors_with_a_cancelled_exception(qtbot):
    worker, seen = _run(qtbot, workers.run_in_thread, _cancelled_job, timeout_s=THREAD_TIMEOUT_S)
    assert isinstance(seen["errored"][0], Cancelled)
    assert worker.failed == "cancelled: recording cancelled; nothing was stored"


def test_process_worker_relays_the_exception_type_and_progress_objects(qtbot):
    worker, seen = _run(qtbot, workers.run_in_process, _failing_job, 9, timeout_s=PROCESS_TIMEOUT_S)
    exc = seen["errored"][0]
    assert type(exc) is DataError and exc.code == 9 and str(exc) == "too few windows"
    assert worker.exception is exc
    wait_for(qtbot, lambda: len(seen["progress"]) == 2, THREAD_TIMEOUT_S, "both progress reports")
    assert seen["progress"] == [JobProgress(40, "halfway"), DeviceProgress("sim-001", 512, 1024)]


def test_process_worker_relays_cancelled(qtbot):
    _worker, seen = _run(qtbot, workers.run_in_process, _cancelled_job, timeout_s=PROCESS_TIMEOUT_S)
    assert isinstance(seen["errored"][0], Cancelled)


def test_a_finished_worker_and_its_result_are_freed(qtbot):
    """The condition panel starts a worker every second: each one (and the analysis it returned)
    used to stay in memory for good, ~150 KB a second per live view."""
    import gc
    import weakref

    from app.ui.workers import run_in_thread

    results = []
    worker = run_in_thread(lambda _p, _c: bytearray(1_000_000), name="freed", on_result=results.append)
    gone = weakref.ref(worker)
    del worker
    qtbot.waitUntil(lambda: len(results) == 1, timeout=30_000)
    results.clear()
    qtbot.waitUntil(lambda: (gc.collect(), gone() is None)[1], timeout=30_000)
