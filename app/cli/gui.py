"""`tinymlops gui [--broker URL] [--devices N]`, and `tinymlops` alone: the operator GUI.

The window is shown before anything heavy happens: the session (embedded broker + virtual fleet +
fleet monitor, or a plant broker) starts in a worker thread, and TensorFlow is imported only by
the jobs that train or convert. `--smoke-test` shows the window offscreen-capable, waits for the
devices to fill the fleet view, then trains one tiny model through the GUI's own worker path (a
spawned child process, the part most likely to break in a frozen bundle), prints one JSON line
and exits (the packaged build's check).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

# The packaged smoke test waits this long for the devices to show in the fleet view.
SMOKE_DEVICES_TIMEOUT_S = 120.0
# ... and this long for the tiny training job: a spawned child imports TensorFlow (tens of seconds
# from a cold frozen bundle on a slow laptop), trains one epoch and converts (a few seconds here).
SMOKE_TRAINING_TIMEOUT_S = 300.0
SMOKE_POLL_MS = 100


def register(sub) -> None:
    from app.services.app_session import DEFAULT_DEVICE_COUNT

    p = sub.add_parser("gui", help="open the operator window (default when no command is given)",
                       description="The operator window. Without --broker it starts the embedded default: an "
                       "in-process MQTT broker and a virtual fleet, so live devices show at once.")
    p.add_argument("--broker", metavar="URL", help="connect to this broker (mqtt://[user:pass@]host:port) instead "
                   "of the embedded default")
    p.add_argument("--devices", type=int, default=DEFAULT_DEVICE_COUNT, metavar="N",
                   help=f"virtual devices of the embedded default (default {DEFAULT_DEVICE_COUNT})")
    p.add_argument("--smoke-test", action="store_true",
                   help="show the window, wait for the devices, train a tiny model in a worker process, print "
                   "a JSON line and exit (packaging check)")
    p.set_defaults(func=run)


def run_default(args: argparse.Namespace | None = None) -> int:
    """`tinymlops` without a command: the GUI on the embedded default."""
    from app.services.app_session import DEFAULT_DEVICE_COUNT

    ns = argparse.Namespace(broker=None, devices=DEFAULT_DEVICE_COUNT, smoke_test=False)
    for key in ("broker", "devices", "smoke_test"):
        if args is not None and getattr(args, key, None) is not None:
            setattr(ns, key, getattr(args, key))
    return run(ns)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    from PySide6.QtWidgets import QApplication

    from app.domain.errors import LinkError
    from app.services.app_session import SessionConfig
    from app.transport.urls import parse_broker_url

    if args.broker:
        try:
            parse_broker_url(args.broker)
        except LinkError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.devices < 1:
        print("error: --devices must be at least 1", file=sys.stderr)
        return 2
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Tiny-MLOps operator")
    app.setOrganizationName("tinymlops")
    from app.ui.main_window import MainWindow
    from app.ui.settings import Settings

    settings = Settings.load()
    settings.apply_data_dir()
    window = MainWindow(settings)
    window.show()
    app.processEvents()
    window_s = time.perf_counter() - started
    broker = args.broker or settings.broker_url or None
    config = SessionConfig(broker_url=broker, devices=args.devices,
                           username=None if args.broker else (settings.username or None),
                           password=None if args.broker else (settings.password or None))
    window.start_session(config)
    if not args.smoke_test:
        code = app.exec()
        return int(code)

    return _smoke_test(app, window, started, window_s, expected=args.devices if broker is None else 1)


def _smoke_test(app, window, started: float, window_s: float, expected: int) -> int:
    """Wait for `expected` devices, then run the tiny training job through workers.run_in_process;
    print one JSON line: ok, seconds (window, devices, training), devices, training, tensorflow_imported."""
    from PySide6.QtCore import QTimer

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
        failed = window._session_worker is not None and window._session_worker.failed
        if n >= expected or failed or time.monotonic() > deadline:
            result["devices"] = n
            result["seconds"]["devices"] = round(time.perf_counter() - started, 3)
            if failed:
                result["error"] = window._session_worker.failed
            train()  # also when the devices did not come: the JSON line then says what else works
            return
        QTimer.singleShot(SMOKE_POLL_MS, poll)

    QTimer.singleShot(SMOKE_POLL_MS, poll)
    app.exec()
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1
