"""Fleet browser: fills from the virtual fleet over a real broker, groups by site/line/machine,
filters by text and state, colours alarms, and batches updates for a large fleet."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor

from tests.ui.conftest import FAULTY_DEVICE, FLEET_SIZE, wait_for

# A layout pass takes milliseconds; this bounds a failing test on a loaded box.
LAYOUT_TIMEOUT_S = 10.0


def test_fleet_fills_groups_and_filters(window, qtbot):
    view = window.fleet_view
    model = window.fleet_model
    assert model.device_ids() == [f"sim-{i:03d}" for i in range(1, FLEET_SIZE + 1)]
    # grouped site / line / machine / device
    sites = [view.proxy.index(r, 0).data() for r in range(view.proxy.rowCount())]
    assert sites == ["plant-a", "plant-b"]
    assert sorted(view.visible_devices()) == model.device_ids()

    # text search: a site name shows all its devices, an id shows one
    qtbot.keyClicks(view.search, "plant-b")
    visible = view.visible_devices()
    assert visible and all(model.record(d).location.startswith("plant-b/") for d in visible)
    assert len(visible) == sum(model.record(d).location.startswith("plant-b/") for d in model.device_ids())
    view.search.clear()
    qtbot.keyClicks(view.search, "sim-002")
    assert view.visible_devices() == ["sim-002"]
    view.search.clear()

    # the faulty machine alarms (scores from its telemetry), shown red, and the state filter finds it
    wait_for(qtbot, lambda: model.status(FAULTY_DEVICE) == "alarm", 15, "the faulty device's alarm")
    view.status_filter.setCurrentIndex(view.status_filter.findData("alarm"))
    assert FAULTY_DEVICE in view.visible_devices()
    assert all(model.status(d) == "alarm" for d in view.visible_devices())
    index = model.index_of_device(FAULTY_DEVICE, 1)
    assert index.data() == "alarm"
    assert index.data(Qt.ItemDataRole.ForegroundRole).color() == QColor("#c62828")
    score = model.index_of_device(FAULTY_DEVICE, 5).data()
    assert "/" in score  # score / threshold
    view.status_filter.setCurrentIndex(0)
    assert sorted(view.visible_devices()) == model.device_ids()
    assert any(row[1] == "alarm" and row[2] == FAULTY_DEVICE for row in window.events.model.rows())
    # the alarm reads as a sentence: which features drove the score (the device's factory model, rerun on
    # this host in a worker: tests/analysis/test_alarm_cause.py), in the alarm's follow-up
    alarms = [row[3] for row in window.events.model.rows() if row[1] == "alarm" and row[2] == FAULTY_DEVICE]
    assert alarms and all("above threshold" in a for a in alarms), alarms
    follow = lambda: [r[3] for r in window.events.model.rows() if r[2] == FAULTY_DEVICE and "after the alarm" in r[3]]  # noqa: E731
    wait_for(qtbot, follow, 240, "the alarm's follow-up")
    assert "alarm driven by " in follow()[0] and " %)" in follow()[0], follow()
    assert "broker" in window.broker_label.text() and "●" in window.broker_label.text()
    # what the broker supports (the probe at connect), in words in the broker label's tooltip
    wait_for(qtbot, lambda: "wildcard subscriptions" in window.broker_label.toolTip(), 15, "the broker probe")
    assert "publishes last wills" in window.broker_label.toolTip()


def test_selection_drives_live_view_and_context_menu(window, qtbot):
    assert window.fleet_view.select_device("sim-001")
    assert window.live.primary == "sim-001"
    menu = window.fleet_view.context_menu_for("sim-001")
    names = [a.text() for a in menu.actions() if a.text()]
    assert "Show live" in names
    assert any(a.objectName() == "rollback" for a in menu.actions())


def _record(i: int, **kw):
    from app.services.fleet_monitor import DeviceRecord

    site = ("north", "south")[i % 2]
    fields = dict(profile="stm32l4r5", firmware="1.0", model_name="m", model_version=1, score=0.1, threshold=1.0,
                  last_seen=time.time())
    return DeviceRecord(device_id=f"dev-{i:04d}", site=site, location=f"{site}/line-{i % 5}/pump-{i % 20}",
                        **{**fields, **kw})


def test_a_thousand_devices_arrive_in_a_few_batched_model_updates(qapp):
    from app.ui.fleet_filter import FleetFilter
    from app.ui.fleet_model import FleetModel

    model = FleetModel()
    proxy = FleetFilter()
    proxy.setSourceModel(model)
    inserts, changes, repaints, resets = [], [], [], []
    model.rowsInserted.connect(lambda *a: inserts.append(a))
    model.dataChanged.connect(lambda *a: changes.append(a))
    model.repaint.connect(lambda: repaints.append(1))
    model.modelReset.connect(lambda: resets.append(1))
    for i in range(1000):
        model.enqueue("added", _record(i))
    assert model.flush() == 1000
    assert len(model.device_ids()) == 1000
    # a whole plant arriving at once is one model reset, not an insert per group
    assert resets == [1] and not inserts
    assert proxy.rowCount() == 2
    # a few more: one insert per new group node and one per machine's batch of devices
    for i in range(1000, 1040):
        model.enqueue("added", _record(i))
    assert model.flush() == 40
    machines = {r.location for r in map(_record, range(1000, 1040))}
    assert len(inserts) == len(machines) < 40 and resets == [1]
    assert len(model.device_ids()) == 1040

    # 3,000 telemetry updates collapse into one flush: score changes repaint the view once; only
    # the device whose state changed (alarm) is announced, with its group rows
    inserts.clear()
    changes.clear()
    for repeat in range(3):
        for i in range(1000):
            model.enqueue("telemetry", _record(i, score=0.1 + repeat, alarm=(i == 7 and repeat == 2)))
    assert model.flush() == 1000
    assert not inserts
    assert repaints == [1]
    assert len(changes) == 1 + 3  # the device's row, then its machine, line and site
    assert model.status("dev-0007") == "alarm"
    assert model.record("dev-0500").score == 2.1  # the newest value is what the view shows
    assert model.index_of_device("dev-0500", 5).data().startswith("2.100")
    proxy.set_status("alarm")
    assert proxy.rowCount() == 1  # only the site holding the alarming device


def test_a_device_sending_garbage_is_reported_not_raised(window, qtbot, ui_fleet):
    from app.protocol import topics
    from app.transport.mqtt_link import MqttConnection

    conn = MqttConnection(ui_fleet).connect()
    try:
        conn.publish(topics.device_topic("plant-a", "sim-001", topics.TELEMETRY), b"\x01\x02garbage", qos=1)
        conn.wait_published()
    finally:
        conn.close()
    wait_for(qtbot, lambda: any("malformed" in row[3] for row in window.events.model.rows()), 10,
             "the dropped-message warning")
    assert window.fleet_model.status("sim-001") != "offline"  # the device itself is unaffected


def test_group_rows_show_their_worst_score_compactly(qtbot):
    from app.ui.fleet_model import COL_SCORE, COL_STATUS, SORT_ROLE, FleetModel

    model = FleetModel()
    rows = [_record(0, score=0.3), _record(10, score=1.2, alarm=True), _record(20, score=870.0, alarm=True),
            _record(40, score=5000.0, state="offline"),  # an offline device's last score is not current
            _record(1, score=0.25)]
    for rec in rows:
        model.enqueue("added", rec)
    model.flush()
    north, south = (model.index(r, 0) for r in range(2))
    assert (north.data(), south.data()) == ("north", "south")
    score = model.index(0, COL_SCORE)
    assert score.data() == "worst 870× thr"  # the worst online device: dev-0020
    assert score.data(Qt.ItemDataRole.ForegroundRole).color() == QColor("#c62828")
    assert "dev-0020" in score.data(Qt.ItemDataRole.ToolTipRole)
    assert model.index(0, COL_STATUS).data() == "3/4 online, 2 alarms"
    healthy = model.index(1, COL_SCORE)
    assert healthy.data() == "worst 0.25× thr"
    assert healthy.data(SORT_ROLE) < score.data(SORT_ROLE)  # sorting by Score puts the worst group last
    # the value follows telemetry: the alarming device recovers
    model.enqueue("telemetry", _record(20, score=0.5))
    model.enqueue("telemetry", _record(10, score=0.9))
    model.flush()
    # recomputed at most every WORST_REFRESH_S (a pass over the fleet), so within about a second
    qtbot.waitUntil(lambda: model.index(0, COL_SCORE).data() == "worst 0.90× thr", timeout=10_000)


def test_a_device_already_alarming_when_first_seen_raises_an_alarm_event(qapp):
    from app.ui.fleet_model import FleetModel

    model = FleetModel()
    got: list = []
    model.events.connect(got.extend)
    # connecting in the morning to a fleet where one machine has been alarming all night
    model.enqueue("added", _record(3, score=4.2, threshold=1.5, alarm=True))
    model.enqueue("added", _record(4, score=9.0, alarm=True, state="offline"))  # last word of a dead device
    model.enqueue("added", _record(5))
    model.flush()
    alarms = [e for e in got if e[0] == "alarm"]
    assert alarms == [("alarm", "dev-0003", "ALARM: anomaly score 4.200 above threshold 1.500")]
    assert sum(e[0] == "info" and "appeared" in e[2] for e in got) == 3
    # it does not repeat while the alarm lasts, and clears once
    got.clear()
    model.enqueue("telemetry", _record(3, score=5.0, threshold=1.5, alarm=True))
    model.flush()
    assert not [e for e in got if e[0] == "alarm"]
    model.enqueue("telemetry", _record(3, score=0.4, threshold=1.5))
    model.flush()
    assert ("ok", "dev-0003", "alarm cleared") in got


def test_fleet_columns_fit_the_dock_and_hidden_columns_come_back(window, qtbot):
    from app.ui.columns import column_menu
    from app.ui.fleet_model import COL_FIRMWARE, COL_TRANSPORT, COL_VELOCITY, COLUMNS
    from app.ui.models_page import COLUMNS as REGISTRY_COLUMNS

    view = window.fleet_view
    header = view.tree.header()
    view.fit_columns()
    # every visible column, Transport and Velocity included, is on screen without scrolling sideways
    # (once the header has laid its sections out: that happens in the event loop, not in fit_columns)
    assert header.isSectionHidden(COL_FIRMWARE) and not header.isSectionHidden(COL_TRANSPORT)
    assert not header.isSectionHidden(COL_VELOCITY)
    wait_for(qtbot, lambda: view.tree.horizontalScrollBar().maximum() == 0, LAYOUT_TIMEOUT_S,
             "every visible column to fit the dock")
    assert header.sectionViewportPosition(COL_TRANSPORT) + header.sectionSizeHint(COL_TRANSPORT) \
        <= view.tree.viewport().width()
    # the header's menu brings a hidden column back (and hides it again); the device name always stays
    menu = column_menu(header, COLUMNS)
    firmware = menu.findChild(type(menu.actions()[0]), f"column-{COL_FIRMWARE}")
    assert not firmware.isChecked()
    firmware.setChecked(True)
    assert not header.isSectionHidden(COL_FIRMWARE)
    firmware.setChecked(False)
    assert header.isSectionHidden(COL_FIRMWARE)
    assert not menu.actions()[0].isEnabled()
    # the registry hides the columns its card repeats, and shows them on request
    registry = window.models.table.horizontalHeader()
    quantisation = REGISTRY_COLUMNS.index("Quantisation")
    assert registry.isSectionHidden(quantisation) and not registry.isSectionHidden(REGISTRY_COLUMNS.index("Image"))
    column_menu(registry, REGISTRY_COLUMNS).actions()[quantisation].setChecked(True)
    assert not registry.isSectionHidden(quantisation)


def test_tooltip_says_whether_a_device_checks_signatures():
    from app.protocol import messages as m
    from app.protocol.codes import Caps
    from app.ui.fleet_model import trust_text

    assert "not provisioned" in trust_text(m.Hello(caps=int(Caps.SIGNED), trust_keys=0))
    assert "2 trusted key(s)" in trust_text(m.Hello(caps=int(Caps.SIGNED), trust_keys=2))
    assert "does not check" in trust_text(m.Hello(caps=int(Caps.PUSH_XFER)))
    assert "not known" in trust_text(None)
