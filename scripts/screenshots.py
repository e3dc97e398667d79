"""Render each main view of the GUI offscreen into docs/screenshots/*.png (for the README).

    QT_QPA_PLATFORM=offscreen python3 scripts/screenshots.py [--out docs/screenshots] [--keep-data]

Runs the real application on the embedded default (in-process broker + virtual fleet) with a
throw-away data directory: streams live vibration from a faulty machine, trains and converts two
model versions of different sizes from simulated normal data on the Models page, deploys both from
the wizard to three devices (so the latency dashboard plots size against deployment time), and
captures the fleet, live view (overlay and side by side), models page, deploy wizard and latency
dashboard. Takes about a minute (TensorFlow trains the models); --live-only stops after the fleet,
live view and condition-monitoring shots (no training).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Long enough for devices to connect, TensorFlow to train and a deployment to finish on a busy machine.
STEP_TIMEOUT_S = 240.0
# A common laptop/desktop width: the fleet (every column, Transport included) and a page beside it.
WINDOW_SIZE = (1600, 940)
# Layer sizes of the two versions: the second is wider, so its image is larger and the latency
# dashboard's "image size vs deployment" plot has two sizes to compare.
VERSION_LAYERS = ((32, 16), (96, 48))
# The faulty virtual device (every 7th from the 4th boots with a fault) makes the live view interesting.
LIVE_DEVICE = "sim-004"
COMPARE_DEVICE = "sim-001"
DEPLOY_TARGETS = ["sim-001", "sim-002", "sim-003"]


def wait_until(app, predicate, timeout: float = STEP_TIMEOUT_S, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"screenshots: timed out waiting for {what}")
        app.processEvents()
        time.sleep(0.02)


def pump(app, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


def add_normal_dataset(seconds: float = 30.0) -> str:
    """Simulated normal vibration of a few machines as one dataset (what 'Record' would collect)."""
    import numpy as np

    from app.fleet.vibration import MachineSimulator
    from app.ml.datasets import DatasetStore

    parts = [MachineSimulator(seed, shaft_hz=hz).generate(int(seconds / 3 * 3200))
             for seed, hz in ((11, 24.0), (12, 26.5), (13, 29.0))]
    with DatasetStore() as store:
        return store.add(np.concatenate(parts), 3200, "normal", source="simulated").id


def describe_machines(count: int) -> None:
    """Machine descriptions of the virtual fleet (6205 bearings, ISO 20816-3 group 2, flexible: the
    class benchmarks/diagnosis.py uses), so the condition panel diagnoses and the fleet table zones
    every machine."""
    from app.analysis.bearings import CATALOGUE
    from app.analysis.machines import MachineStore
    from app.fleet.fleet import device_plan

    with MachineStore() as store:
        for index in range(count):
            plan = device_plan(index)
            store.update(plan["device_id"], shaft_hz=plan["shaft_hz"], bearing=CATALOGUE["6205"], iso_group=2,
                         foundation="flexible", name=plan["location"].rsplit("/", 1)[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--keep-data", action="store_true", help="keep the throw-away data directory")
    parser.add_argument("--live-only", action="store_true", help="only the fleet and live-view shots")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="tinymlops-shots-"))
    os.environ["TINYMLOPS_DATA_DIR"] = str(data_dir)
    args.out.mkdir(parents=True, exist_ok=True)

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    # a fresh settings file: the screenshots show the default layout, and the user's own is untouched
    for fmt in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):
        QSettings.setPath(fmt, QSettings.Scope.UserScope, str(data_dir / "settings"))
    app = QApplication(sys.argv[:1])
    from app.services.app_session import SessionConfig
    from app.ui.main_window import TAB_LATENCY, TAB_LIVE, TAB_MODELS, MainWindow
    from app.ui.settings import Settings

    window = MainWindow(Settings())
    window.resize(*WINDOW_SIZE)
    window.show()
    describe_machines(12)
    window.start_session(SessionConfig(devices=12))
    wait_until(app, lambda: len(window.fleet_model.device_ids()) >= 12, what="the virtual fleet")
    pump(app, 2.5)  # telemetry: scores and alarms
    shots: list[Path] = []

    def grab(widget, name: str) -> None:
        path = args.out / f"{name}.png"
        widget.grab().save(str(path))
        shots.append(path)

    window.tabs.setCurrentIndex(TAB_LIVE)
    window.fleet_view.select_device(LIVE_DEVICE)
    pump(app, 0.5)
    grab(window, "fleet")
    window.live.show_devices(LIVE_DEVICE, COMPARE_DEVICE)
    wait_until(app, lambda: window.live.feeds[LIVE_DEVICE].windows > 40, what="the live stream")
    pump(app, 3.0)
    grab(window, "live-view")
    window.live.set_compare_mode("side")
    pump(app, 1.0)
    grab(window, "live-side-by-side")
    window.live.set_compare_mode("overlay")
    window.live.show_devices(LIVE_DEVICE)
    wait_until(app, lambda: window.live.condition.analysis is not None, what="the condition analysis")
    pump(app, 1.5)
    grab(window, "condition-monitoring")
    if args.live_only:
        return finish(window, args, data_dir, shots)

    dataset = add_normal_dataset()
    window.tabs.setCurrentIndex(TAB_MODELS)
    window.models.refresh()
    window.models.set_dataset_checked(dataset)
    for hidden in VERSION_LAYERS:
        worker = window.models.train_checked(name="pump-ae", epochs=40, hidden=hidden)
        wait_until(app, lambda w=worker: w.done, what="training")
        if worker.failed:
            raise SystemExit(f"screenshots: training failed: {worker.failed}")
    pump(app, 0.5)  # the last job's result handler selects the version it registered
    window.models.select_version("pump-ae@1")
    pump(app, 0.5)
    grab(window, "models")

    for ref in ("pump-ae@1", "pump-ae@2"):
        wizard = window.open_deploy_wizard(DEPLOY_TARGETS)
        wizard.version_page.select_ref(ref)
        while wizard.currentId() != 4:
            wizard.next()
            app.processEvents()
        wait_until(app, lambda w=wizard: w.worker is not None and w.worker.done, what="the deployment")
        pump(app, 0.3)
        if ref == "pump-ae@2":
            grab(wizard, "deploy-wizard")
        wizard.accept()
    window.tabs.setCurrentIndex(TAB_LATENCY)
    window.dashboard.refresh()
    pump(app, 0.5)
    grab(window, "latency-dashboard")
    return finish(window, args, data_dir, shots)


def finish(window, args, data_dir: Path, shots: list[Path]) -> int:
    window.close()
    if not args.keep_data:
        shutil.rmtree(data_dir, ignore_errors=True)
    for path in shots:
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
