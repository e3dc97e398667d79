"""The fleet memory (last known values and sites of devices, in SQLite) survives damage, restarts and
concurrent writers."""

from __future__ import annotations

import json
import logging

import pytest

from app.services.fleet_memory import LEGACY_FILE, MAX_MEMORY_BYTES, FleetMemory


def test_two_processes_saving_merge_and_the_most_recently_heard_wins(tmp_path):
    path = tmp_path / "tinymlops.sqlite3"
    gui, cli = FleetMemory(path), FleetMemory(path)
    gui.remember("dev-a", {"model_name": "pump", "model_version": 3, "last_seen": 200.0})
    gui.remember("dev-b", {"model_name": "fan", "model_version": 1, "last_seen": 100.0})
    cli.remember("dev-a", {"model_name": "pump", "model_version": 2, "last_seen": 150.0})  # older news
    cli.remember("dev-c", {"model_name": "motor", "model_version": 5, "last_seen": 120.0})
    gui.save()
    cli.save()
    later = FleetMemory(path)
    assert later.get("dev-a")["model_version"] == 3
    assert {d: later.get(d)["model_name"] for d in ("dev-b", "dev-c")} == {"dev-b": "fan", "dev-c": "motor"}
    assert set(later.known()) == {"dev-a", "dev-b", "dev-c"}


def test_a_restart_remembers_where_each_device_is_and_a_forgotten_one_stays_gone(tmp_path):
    path = tmp_path / "tinymlops.sqlite3"
    first = FleetMemory(path)
    first.remember("dev-a", {"site": "plant", "trial": True, "last_seen": 5.0})
    first.remember("dev-b", {"site": "yard", "last_seen": 6.0})
    first.save()
    first.forget("dev-b")
    first.save()
    assert FleetMemory(path).known() == {"dev-a": {"site": "plant", "trial": True, "last_seen": 5.0}}


def test_rows_of_the_wrong_type_are_not_believed(tmp_path, caplog):
    from app.domain import database

    path = tmp_path / "tinymlops.sqlite3"
    FleetMemory(path)  # creates the table
    db = database.connect(path)
    db.execute("INSERT INTO fleet_memory (device_id, model_version, last_seen, model_name, trial) "
               "VALUES ('dev-a', '3; rm -rf /', 'yesterday', x'00ff', 7)")
    with caplog.at_level(logging.DEBUG):
        assert FleetMemory(path).get("dev-a") in (None, {})
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_a_damaged_database_is_a_warning_and_the_run_still_remembers(tmp_path, caplog):
    path = tmp_path / "tinymlops.sqlite3"
    path.write_bytes(b"this is not an SQLite database, it is damaged" * 100)
    with caplog.at_level(logging.DEBUG):
        memory = FleetMemory(path)
        memory.remember("dev-a", {"model_name": "pump", "model_version": 1, "last_seen": 1.0})
        memory.save()
    assert memory.get("dev-a") == {"model_name": "pump", "model_version": 1, "last_seen": 1.0}
    assert "unusable" in caplog.text
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize("content", [
    b"{half a file", b"[1, 2, 3]", b'{"devices": 7}', b"\xff\xfe not utf-8",
    json.dumps({"devices": {"dev-a": {"model_version": "3; rm -rf /", "last_seen": "yesterday",
                                      "model_name": ["x"], "evil": 1}}}).encode(),
])
def test_a_damaged_json_memory_of_an_earlier_version_is_ignored_with_a_warning(tmp_path, caplog, content):
    (tmp_path / LEGACY_FILE).write_bytes(content)
    with caplog.at_level(logging.DEBUG):
        memory = FleetMemory(tmp_path / "tinymlops.sqlite3")
    assert memory.get("dev-a") in (None, {})  # nothing of the wrong type is believed
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_the_json_memory_of_an_earlier_version_is_imported_once(tmp_path):
    (tmp_path / LEGACY_FILE).write_text(json.dumps(
        {"version": 1, "devices": {"dev-a": {"site": "plant", "model_name": "pump", "last_seen": 3.0}}}))
    assert FleetMemory(tmp_path / "tinymlops.sqlite3").get("dev-a") == {
        "site": "plant", "model_name": "pump", "last_seen": 3.0}
    assert not (tmp_path / LEGACY_FILE).exists()
    assert FleetMemory(tmp_path / "tinymlops.sqlite3").get("dev-a")["site"] == "plant"


def test_an_oversized_legacy_memory_file_is_not_read(tmp_path, caplog):
    (tmp_path / LEGACY_FILE).write_bytes(b" " * (MAX_MEMORY_BYTES + 1))
    with caplog.at_level(logging.WARNING):
        assert FleetMemory(tmp_path / "tinymlops.sqlite3").get("anything") is None
    assert "larger than" in caplog.text


def test_the_gui_session_shows_an_offline_device_as_last_known(mosquitto_factory, tmp_path, monkeypatch):
    """The GUI started after a device went away finds only its will (no model, no time) on the
    broker; the fleet table shows the model it last ran and when it was last heard."""
    from app.protocol import messages as m
    from app.protocol import topics
    from app.services.app_session import AppSession, SessionConfig
    from app.services.fleet_memory import default_path
    from app.transport.mqtt_link import MqttConnection
    from app.ui.fleet_model import age_text
    from tests.transport.helpers import wait_until

    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(tmp_path / "data"))
    heard = 1_700_000_000.0
    memory = FleetMemory(default_path())  # what yesterday's session saw
    memory.remember("pump-7", {"site": "plant", "model_name": "pump-ae", "model_version": 4, "last_seen": heard})
    memory.save()
    url = mosquitto_factory().url
    will = m.Hello(device_id="pump-7", location="plant/line-1/pump-7", state=0)  # composed at connect: no model
    with MqttConnection(url) as conn:
        conn.publish(topics.device_topic("plant", "pump-7", topics.STATUS), m.encode(will), qos=1, retain=True)
        conn.wait_published()
    session = AppSession(SessionConfig(broker_url=url)).start()
    try:
        wait_until(lambda: session.monitor.get("pump-7") is not None, what="the will")
        record = session.monitor.get("pump-7")
    finally:
        session.close()
    assert (record.state, record.model_name, record.model_version, record.last_seen) == (
        "offline", "pump-ae", 4, heard)
    assert age_text(record.last_seen) != "never"
