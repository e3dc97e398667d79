"""The live view's condition panel, the machine dialog and the fleet table's velocity column, fed
real protocol STREAM messages and telemetry features of simulated machines (Qt offscreen)."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from app.analysis.bearings import CATALOGUE
from app.analysis.machines import MachineStore
from app.analysis.simulated import record
from app.ml.features import extract_batch, windows_from_recording
from app.protocol import messages as m
from app.protocol.codes import FaultMask
from app.services.fleet_monitor import DeviceRecord

# int16 counts per g of the simulated device's stream (PROTOCOL.md 4.3: g = samples * scale).
SCALE = 1.0 / 2048
WINDOW = 256
# The panel analyses in a worker thread: milliseconds, but a loaded 2-core machine may be slow.
ANALYSIS_TIMEOUT_MS = 30_000


# garbage is collected on the GUI thread only, as in the application (tests/fixtures/qt_gc.py)
pytestmark = pytest.mark.usefixtures("gc_on_gui_thread")


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(tmp_path))


def fed(device_id: str, mask: int, severity: float, shaft_hz: float = 24.7):
    """A DeviceFeed that received 4 s of a simulated machine as STREAM messages."""
    from app.ui.live_feed import DeviceFeed

    rec = record(8, mask, severity, 4.0, shaft_hz=shaft_hz)
    feed = DeviceFeed(device_id)
    counts = np.clip(np.round(rec.samples / SCALE), -32768, 32767).astype(np.int16)
    for seq, start in enumerate(range(0, len(counts), WINDOW)):
        feed.on_stream(device_id, m.Stream(seq, rec.sample_rate, SCALE, counts[start:start + WINDOW]))
    feed.shaft_hz = shaft_hz
    return feed, rec


def test_panel_shows_zone_diagnosis_and_defect_markers(qtbot):
    from app.ui.severity_view import ConditionPanel

    with MachineStore() as store:
        store.update("sim-004", shaft_hz=24.7, bearing=CATALOGUE["6205"], iso_group=2, foundation="flexible")
    panel = ConditionPanel()
    qtbot.addWidget(panel)
    feed, rec = fed("sim-004", FaultMask.BEARING_OUTER, 0.6)
    panel.set_feed(feed)
    qtbot.waitUntil(lambda: panel.analyses >= 1, timeout=ANALYSIS_TIMEOUT_MS)  # in a worker thread
    assert panel.analysis is not None and panel.analysis.fault == "outer_race"
    assert panel.gauge.zone.machine_class == "20816-3/2/flexible"
    bpfo = panel.markers["BPFO"]
    assert bpfo.isVisible() and abs(bpfo.value() - rec.defect_hz("BPFO")) <= panel.analysis.resolution_hz
    assert "outer race" in panel.diagnosis.text()
    assert panel.curve.xData is not None and len(panel.curve.xData) > 100
    assert panel.last_analysis_ms > 0


def test_panel_without_a_description_still_shows_the_velocity_zone_and_says_what_is_missing(qtbot):
    from app.ui.severity_view import ConditionPanel

    panel = ConditionPanel()
    qtbot.addWidget(panel)
    feed, _ = fed("sim-009", FaultMask.IMBALANCE, 1.0)
    panel.set_feed(feed)
    qtbot.waitUntil(lambda: panel.analyses >= 1, timeout=ANALYSIS_TIMEOUT_MS)
    assert panel.analysis is None and "no bearing geometry" in panel.problem
    assert panel.gauge.zone is not None and panel.gauge.zone.zone == "D"  # class I: a small machine
    assert not any(line.isVisible() for line in panel.markers.values())


def test_panel_waits_for_enough_samples(qtbot):
    from app.ui.live_feed import DeviceFeed
    from app.ui.severity_view import ConditionPanel

    panel = ConditionPanel()
    qtbot.addWidget(panel)
    panel.set_feed(DeviceFeed("sim-001"))
    assert panel.gauge.zone is None and "waiting" in panel.problem


def test_machine_dialog_saves_and_keeps_bad_input_open(qtbot):
    from app.ui.machine_dialog import MachineDialog

    dialog = MachineDialog("sim-002", shaft_hint=25.5)
    qtbot.addWidget(dialog)
    assert dialog.shaft.value() == pytest.approx(25.5)
    dialog.bearing.setCurrentText("n=9,d=40,D=39")
    dialog.accept()
    assert dialog.saved is None and "smaller than the pitch" in dialog.error.text()
    dialog.bearing.setCurrentText("6206")
    dialog.group.setCurrentIndex(dialog.group.findData(2))
    dialog.foundation.setCurrentText("rigid")
    dialog.accept()
    assert dialog.result() == dialog.DialogCode.Accepted
    with MachineStore() as store:
        saved = store.get("sim-002")
    assert (saved.shaft_hz, saved.bearing, saved.machine_class) == (pytest.approx(25.5), CATALOGUE["6206"],
                                                                    "20816-3/2/rigid")


def test_fleet_table_velocity_column_follows_telemetry_features(qapp):
    from app.ui.fleet_model import COL_VELOCITY, SORT_ROLE, FleetModel

    rec = record(2, FaultMask.IMBALANCE, 0.8, 1.0, shaft_hz=26.0)
    features = tuple(float(v) for v in extract_batch(windows_from_recording(rec.samples))[0])
    model = FleetModel()
    model.set_machine_classes({"sim-003": "20816-3/1/flexible"})
    for device, feats in (("sim-003", features), ("sim-005", ())):
        model.enqueue("added", DeviceRecord(device_id=device, location=f"plant-a/line-1/{device}", shaft_hz=26.0,
                                            features=feats))
    model.flush()
    cell = model.index_of_device("sim-003", COL_VELOCITY)
    value, zone = cell.data().split()
    assert float(value) > 7.1 and zone == "D"  # group 1 flexible: C/D at 11.0 mm/s
    assert cell.data(Qt.ItemDataRole.BackgroundRole).color().name() == "#d23c3c"
    assert "20816-3/1/flexible" in cell.data(Qt.ItemDataRole.ToolTipRole)
    assert cell.data(SORT_ROLE) == pytest.approx(float(value), abs=0.01)
    assert model.index_of_device("sim-005", COL_VELOCITY).data() == "-"  # no telemetry yet


def test_fleet_zones_pick_up_machines_described_elsewhere(monkeypatch):
    from app.ui import fleet_zones

    rec = record(2, FaultMask.IMBALANCE, 0.3, 1.0, shaft_hz=26.0)
    features = tuple(float(v) for v in extract_batch(windows_from_recording(rec.samples))[0])
    device = DeviceRecord(device_id="sim-007", shaft_hz=26.0, features=features)
    cache = fleet_zones.ZoneCache()
    assert cache.zone(device).machine_class == "10816-1/I"
    with MachineStore() as store:  # e.g. `tinymlops machine set` in a terminal
        store.update("sim-007", iso_group=1, foundation="rigid")
    monkeypatch.setattr(fleet_zones, "CLASSES_RELOAD_S", 0.0)  # the next look re-reads the store
    assert cache.zone(device).machine_class == "20816-3/1/rigid"
