"""The live view's condition panel on a real streamed device: the virtual fleet's sim-004 runs with
an outer-race bearing defect (app.fleet.fleet.DEFAULT_FAULTS) on a 6205 bearing; described as such,
the panel names the fault from the MQTT stream, and the fleet table zones its velocity."""

from __future__ import annotations

from PySide6.QtCore import Qt

from tests.ui.conftest import FAULTY_DEVICE, wait_for

# Four seconds of stream fill the feed's buffer, then one analysis a second; a loaded machine is slower.
ANALYSIS_TIMEOUT_S = 60.0


def test_condition_panel_diagnoses_a_streamed_bearing_fault(window, qtbot):
    from app.analysis.bearings import CATALOGUE
    from app.analysis.machines import MachineStore
    from app.fleet.fleet import device_plan
    from app.ui.fleet_model import COL_VELOCITY
    from app.ui.main_window import TAB_LIVE

    shaft = device_plan(int(FAULTY_DEVICE.split("-")[1]) - 1)["shaft_hz"]
    with MachineStore() as store:
        store.update(FAULTY_DEVICE, shaft_hz=shaft, bearing=CATALOGUE["6205"], iso_group=2, foundation="rigid")
    window.tabs.setCurrentIndex(TAB_LIVE)
    window.fleet_view.select_device(FAULTY_DEVICE)
    panel = window.live.condition
    wait_for(qtbot, lambda: panel.analysis is not None and panel.analysis.fault == "outer_race",
             ANALYSIS_TIMEOUT_S, f"the panel's outer-race diagnosis (last: {panel.problem or panel.analysis})")
    assert panel.gauge.zone.machine_class == "20816-3/2/rigid"
    assert panel.markers["BPFO"].isVisible()
    model = window.fleet_model
    wait_for(qtbot, lambda: model.index_of_device(FAULTY_DEVICE, COL_VELOCITY).data() not in (None, "-"),
             ANALYSIS_TIMEOUT_S, "the fleet table's velocity")
    # a description saved from the panel's machine dialog re-zones the fleet table
    with MachineStore() as store:
        store.update(FAULTY_DEVICE, iso_group=1, foundation="flexible")
    panel.machine_changed.emit(FAULTY_DEVICE)
    tip = model.index_of_device(FAULTY_DEVICE, COL_VELOCITY).data(Qt.ItemDataRole.ToolTipRole)
    assert "20816-3/1/flexible" in tip
