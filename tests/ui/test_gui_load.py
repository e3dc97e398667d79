"""The GUI under a large fleet's load: the condition analysis runs in a worker (the GUI thread only
draws), telemetry is coalesced yet every device shows its latest state, the fleet tree opens with
its groups collapsed, and search finds one device among 10,000 (real Qt widgets, offscreen)."""

from __future__ import annotations

import dataclasses
import time

from app.protocol.codes import FaultMask
from tests.analysis.test_condition_gui import fed

# Analyses and event-loop passes take milliseconds; this bounds a failing test on a loaded machine.
WAIT_MS = 30_000
BIG_FLEET = 10_000


def test_condition_analysis_runs_in_a_worker_and_drops_a_result_for_a_device_no_longer_shown(qtbot, tmp_path,
                                                                                            monkeypatch):
    from app.ui.severity_view import ConditionPanel

    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(tmp_path))
    panel = ConditionPanel()
    qtbot.addWidget(panel)
    first, _ = fed("sim-009", FaultMask.IMBALANCE, 1.0)
    panel.set_feed(first)
    assert panel.analyses == 0  # the GUI thread returned without analysing: a worker does it
    second, _ = fed("sim-004", FaultMask.IMBALANCE, 0.05)
    panel.set_feed(second)  # while the first device's analysis may still run
    qtbot.waitUntil(lambda: panel.analyses >= 1 and not panel.analysing, timeout=WAIT_MS)
    assert panel.analyses == 1  # only the shown device's result was drawn
    assert panel.feed is second
    assert panel.gauge.zone is not None and panel.gauge.zone.zone != "D"  # sim-009's imbalance is zone D


def _record(i: int, **kw):
    """Device i of a synthetic 10,000-device plant: 4 sites x 10 lines x 25 machines."""
    from app.services.fleet_monitor import DeviceRecord

    site = f"site-{i % 4}"
    fields = dict(profile="stm32l4r5", firmware="1.0", model_name="m", model_version=1, score=0.1, threshold=1.0,
                  last_seen=time.time())
    return DeviceRecord(device_id=f"bench-{i:05d}", site=site,
                        location=f"{site}/line-{(i // 4) % 10}/machine-{(i // 40) % 25}", **{**fields, **kw})


def _big_fleet_view(qtbot):
    from app.ui.fleet_model import FleetModel
    from app.ui.fleet_view import FleetView

    model = FleetModel()
    view = FleetView(model)
    qtbot.addWidget(view)
    view.resize(800, 600)
    view.show()
    for i in range(BIG_FLEET):
        model.enqueue("added", _record(i))
    assert model.flush() == BIG_FLEET
    return model, view


def test_a_big_fleet_opens_with_its_groups_collapsed(qtbot):
    _model, view = _big_fleet_view(qtbot)
    proxy, tree = view.proxy, view.tree
    qtbot.waitUntil(lambda: proxy.rowCount() == 4, timeout=WAIT_MS)
    sites = [proxy.index(r, 0) for r in range(proxy.rowCount())]
    assert [s.data() for s in sites] == [f"site-{i}" for i in range(4)]
    assert not any(tree.isExpanded(s) for s in sites)
    # a group row still says what is below it
    assert sites[0].siblingAtColumn(1).data() == f"{BIG_FLEET // 4}/{BIG_FLEET // 4} online"
    # the operator opens one site: its lines show, their machines stay closed
    tree.expand(sites[1])
    line = proxy.index(0, 0, sites[1])
    assert line.data() == "line-0" and not tree.isExpanded(line)


def test_search_finds_one_device_among_ten_thousand_and_opens_its_groups(qtbot):
    model, view = _big_fleet_view(qtbot)
    qtbot.keyClicks(view.search, "bench-04321")
    assert view.visible_devices() == ["bench-04321"]
    index = view.proxy.mapFromSource(model.index_of_device("bench-04321"))
    assert index.isValid()
    qtbot.waitUntil(lambda: view.tree.visualRect(index).isValid(), timeout=WAIT_MS)  # its groups opened
    # a line's name shows all its devices (too many to open: they stay collapsed)
    view.search.clear()
    qtbot.keyClicks(view.search, "line-3")
    assert len(view.visible_devices()) == BIG_FLEET // 10
    # clearing the search brings the whole fleet back, collapsed
    view.search.clear()
    assert view.proxy.rowCount() == 4 and not view.tree.isExpanded(view.proxy.index(0, 0))
    assert len(view.visible_devices()) == BIG_FLEET


def test_coalesced_telemetry_still_shows_every_devices_latest_state(qtbot):
    from app.ui.fleet_model import COL_SCORE, COL_STATUS

    model, view = _big_fleet_view(qtbot)
    # three telemetry rounds of the whole fleet arrive between two flushes (one GUI batch)
    for repeat in range(3):
        for i in range(BIG_FLEET):
            model.enqueue("telemetry", _record(i, score=0.1 + repeat + i / 1e5, alarm=(i % 1000 == 7 and repeat == 2)))
    assert model.flush() == BIG_FLEET
    for i in range(BIG_FLEET):
        assert model.index_of_device(f"bench-{i:05d}", COL_SCORE).data().startswith(f"{2.1 + i / 1e5:.3f}")
    alarming = {f"bench-{i:05d}" for i in range(7, BIG_FLEET, 1000)}
    assert {d for d in model.device_ids() if model.status(d) == "alarm"} == alarming
    assert model.index_of_device("bench-00007", COL_STATUS).data() == "alarm"
    # the state filter, set before the next batch, follows it: the alarms leave when they clear
    view.status_filter.setCurrentIndex(view.status_filter.findData("alarm"))
    assert sorted(view.visible_devices()) == sorted(alarming)
    for i in range(BIG_FLEET):
        model.enqueue("telemetry", _record(i, score=0.2, alarm=(i == 7)))
    model.flush()
    qtbot.waitUntil(lambda: view.visible_devices() == ["bench-00007"], timeout=WAIT_MS)


def test_live_view_redraws_only_the_curves_whose_data_changed(qtbot):
    """Raw samples arrive ~12 times a second, scores once: a new stream window must not reset the
    score trend and its bands (what made every frame redraw all of a device's plots)."""
    import numpy as np

    from app.protocol import messages as m
    from app.services.fleet_monitor import DeviceRecord
    from app.ui.live_view import LiveView

    view = LiveView()
    qtbot.addWidget(view)
    view.set_streaming(False)  # no monitor: this test feeds the buffers itself
    view.show_devices("sim-001")
    feed = view.feeds["sim-001"]
    score_sets, wave_sets = [], []
    view.score_curve.sigPlotChanged.connect(lambda *_: score_sets.append(1))
    view.wave_curves[0].sigPlotChanged.connect(lambda *_: wave_sets.append(1))
    samples = np.zeros((256, 3), np.int16)
    for seq in range(8):
        feed.on_stream("sim-001", m.Stream(seq, 3200, 1 / 2048, samples))
        view.draw()
    assert len(wave_sets) == 8 and not score_sets
    feed.on_record(DeviceRecord(device_id="sim-001", score=0.2, threshold=1.0, last_seen=time.time()))
    view.draw()
    assert len(score_sets) == 1 and len(wave_sets) == 8
    assert view.threshold_line.isVisible()


def test_live_plot_y_range_grows_at_once_shrinks_now_and_then_and_leaves_a_users_zoom(qtbot):
    import numpy as np
    import pyqtgraph as pg

    from app.ui.plot_range import SHRINK_INTERVAL_S, StickyYRange

    widget = pg.PlotWidget()
    qtbot.addWidget(widget)
    fitted = StickyYRange(widget.getPlotItem())
    fitted.include("a", np.array([-1.0, np.nan, 1.0]))  # a lost window's NaN is no bound
    assert fitted.apply(now=100.0)
    lo, hi = widget.getPlotItem().getViewBox().viewRange()[1]
    assert lo < -1.0 and hi > 1.0
    fitted.include("b", np.array([0.0, 3.0]))  # a second device beyond the range: it grows at once
    assert fitted.apply(now=100.1)
    assert widget.getPlotItem().getViewBox().viewRange()[1][1] > 3.0
    fitted.include("a", np.array([-0.1, 0.1]))
    fitted.include("b", np.array([0.0, 0.2]))
    assert not fitted.apply(now=100.2)  # small data: the axis stays for this frame ...
    assert fitted.apply(now=100.1 + SHRINK_INTERVAL_S)  # ... and shrinks a second later
    assert widget.getPlotItem().getViewBox().viewRange()[1][1] < 1.0
    widget.getPlotItem().getViewBox().sigRangeChangedManually.emit([False, True])  # the user zooms
    fitted.include("a", np.array([-50.0, 50.0]))
    assert not fitted.apply(now=200.0)
    fitted.reset()  # other devices shown: fitting resumes
    fitted.include("c", np.array([-50.0, 50.0]))
    assert fitted.apply(now=200.1)


def test_group_rows_and_fleet_counts_follow_changes_removals_and_moves(qtbot):
    from app.ui.fleet_model import COL_SCORE, COL_STATUS, FleetModel

    model = FleetModel()
    for i in range(80):  # site-0: devices 0, 4, ..., 76 (20), machine-0 and machine-1 of line-0..9
        model.enqueue("added", _record(i))
    model.flush()
    site0 = model.index(0, COL_STATUS)
    assert site0.data() == "20/20 online"
    assert model.counts()["online"] == 80
    model.enqueue("telemetry", _record(4, score=3.0, alarm=True))
    model.flush()
    assert site0.data() == "20/20 online, 1 alarm"
    assert model.index(0, COL_SCORE).data() == "worst 3.0× thr"
    assert model.counts()["alarm"] == 1 and model.counts()["online"] == 79
    model.enqueue("removed", _record(4))
    model.flush()
    assert site0.data() == "19/19 online" and model.index(0, COL_SCORE).data() == "worst 0.10× thr"
    assert sum(model.counts().values()) == 79
    moved = dataclasses.replace(_record(8), site="site-1", location="site-1/line-0/machine-0")  # to site-1
    model.enqueue("changed", moved)
    model.flush()
    assert site0.data() == "18/18 online"
    assert model.index(1, COL_STATUS).data() == "21/21 online"
    assert model.online_on("mqtt") + model.online_on("serial") <= 79
