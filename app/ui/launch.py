"""Open the operator window (for `tinymlops gui`): the QApplication, the window, the session start,
and the packaged build's `--smoke-test`.

The window is shown before anything heavy happens: the session (embedded broker + virtual fleet +
fleet monitor, or a plant broker) starts in a worker thread, and TensorFlow is imported only by
the jobs that train or convert. The smoke test waits for the devices to fill the fleet view, then
trains one tiny model through the GUI's own worker path (a spawned child process, the part most
likely to break in a frozen bundle), prints one JSON line and exits.
"""

from __future__ import annotations

import json
import sys
import time

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from app.services.app_session import SessionConfig

# The packaged smoke test waits this long for the devices to show in the fleet view.
SMOKE_DEVICES_TIMEOUT_S = 120.0
# ... and this long for the tiny training job: a spawned child imports TensorFlow (tens of seconds
# from a cold frozen bundle on a slow laptop), trains one epoch and converts (a few seconds here).
SMOKE_TRAINING_TIMEOUT_S = 300.0
# How often the smoke test looks at the fleet view and the training worker (Qt timer, ms).
SMOKE_POLL_MS = 100


def run_gui(broker_url: str | None, devices: int, *, smoke_test: bool = False, started: float | None = None) -> int:
    """Show the window, start the session; run the event loop (or the smoke test); the exit code."""
    started = time.perf_counter() if started is None else started
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Tiny-MLOps operator")
    app.setOrganizationName("tinymlops")
    from app.ui.gui_gc import collect_on_gui_thread
    from app.ui.main_window import MainWindow
    from app.ui.settings import Settings

    collect_on_gui_thread()  # a collection in paho's thread can deadlock Qt (app/ui/gui_gc.py)
    settings = Settings.load()
    settings.apply_data_dir()
    window = MainWindow(settings)
    window.show()
    app.processEvents()
    window_s = time.perf_counter() - started
    broker = broker_url or settings.broker_url or None
    config = SessionConfig(broker_url=broker, devices=devices,
                           username=None if broker_url else (settings.username or None),
                           password=None if broker_url else (settings.password or None))
    window.start_session(config)
    if not smoke_test:
        code = app.exec()
        return int(code)

    return _smoke_test(app, window, started, window_s, expected=devices if broker is None else 1)


def _smoke_test(app, window, started: float, window_s: float, expected: int) -> int:
    """Wait for `expected` devices, then run the tiny training job through workers.run_in_process;
    print one JSON line: ok, seconds (window, devices, training), devices, training, tensorflow_imported."""
    from app.ui import jobs, workers

    result: dict = {"ok": False, "seconds": {"window": round(window_s, 3)}, "devices": 0,
                    "training": {"ok": False}, "tensorflow_imported": "tensorflow" in sys.modules}
    deadline = time.monotonic() + SMOKE_DEVICES_TIMEOUT_S

    def finish() -> None:
        result["ok"] = result["devices"] >= expected and "error" not in result and result["training"]["ok"]
        result["tensorflow_imported"] = "tensorflow" in sys.modules  # training ran in a child: still False
        window.close()
        app.quit()

    def train() -> None:
        t0 = time.perf_counter()
        train_deadline = time.monotonic() + SMOKE_TRAINING_TIMEOUT_S
        worker = workers.run_in_process(jobs.smoke_train_job, name="smoke-train")

        def wait_training() -> None:
            if not worker.done and time.monotonic() < train_deadline:
                QTimer.singleShot(SMOKE_POLL_MS, wait_training)
                return
            training = result["training"]
            training["seconds"] = round(time.perf_counter() - t0, 3)
            if not worker.done:
                worker.cancel()
                training["error"] = f"no result within {SMOKE_TRAINING_TIMEOUT_S:.0f} s"
            elif worker.failed:
                training["error"] = worker.failed
            else:
                training["ok"] = True
                training.update(worker.value)
            result["seconds"]["training"] = training["seconds"]
            finish()

        QTimer.singleShot(SMOKE_POLL_MS, wait_training)

    def poll() -> None:
        n = len(window.fleet_model.device_ids())
        start = window.sessions.start_worker
        failed = start is not None and start.failed
        if n >= expected or failed or time.monotonic() > deadline:
            result["devices"] = n
            result["seconds"]["devices"] = round(time.perf_counter() - started, 3)
            if failed:
                result["error"] = start.failed
            train()  # also when the devices did not come: the JSON line then says what else works
            return
        QTimer.singleShot(SMOKE_POLL_MS, poll)

    QTimer.singleShot(SMOKE_POLL_MS, poll)
    app.exec()
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1
