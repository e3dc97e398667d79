"""`tinymlops fleet list` and presence against real virtual devices (app.fleet.VirtualFleet)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.services.fleet_monitor import FleetMonitor
from app.transport.broker import EmbeddedBroker
from app.transport.mqtt_link import MqttConnection
from tests.transport.helpers import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N_DEVICES = 3


def _fleet_list(url: str, *extra: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """`fleet list` with its own data dir: it keeps a fleet memory there, never in the user's."""
    return subprocess.run([sys.executable, "-m", "app", "fleet", "list", "--broker", url, *extra],
                          capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={**os.environ, "TINYMLOPS_DATA_DIR": str(data_dir)})


def test_fleet_list_json_sees_every_simulated_device(mosquitto_factory, virtual_fleet, tmp_path) -> None:
    broker = mosquitto_factory()
    fleet = virtual_fleet(broker.url, N_DEVICES)
    result = _fleet_list(broker.url, "--json", "--wait", "2.5", data_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    devices = {d["device_id"]: d for d in out["devices"]}
    assert set(devices) == {d.device_id for d in fleet.devices}
    for dev in fleet.devices:
        rec = devices[dev.device_id]
        assert rec["state"] == "online"
        assert rec["profile"] == dev.profile.key
        assert rec["model_version"] >= 1 and rec["model_name"]
        assert rec["score"] is not None  # telemetry arrived within the wait
    table = _fleet_list(broker.url, "--wait", "1.5", data_dir=tmp_path)
    assert table.returncode == 0 and "sim-001" in table.stdout and "LAST SEEN" in table.stdout


def test_fleet_list_without_broker_finds_the_running_apps_embedded_broker(tmp_path, monkeypatch) -> None:
    """The app's embedded broker sits on a port the OS picked; `fleet list` alone still finds it."""
    from app.services.app_session import AppSession, SessionConfig

    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("TINYMLOPS_BROKER", raising=False)
    env = {**os.environ, "TINYMLOPS_DATA_DIR": str(tmp_path)}
    session = AppSession(SessionConfig(devices=2)).start()
    try:
        result = subprocess.run([sys.executable, "-m", "app", "fleet", "list", "--json", "--wait", "2"],
                                capture_output=True, text=True, cwd=ROOT, timeout=60, env=env)
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout)
        assert out["broker"] == session.broker_url.removeprefix("mqtt://")
        assert {d["device_id"] for d in out["devices"]} == {d.device_id for d in session.fleet.devices}
    finally:
        session.close()
    from app.transport.local_broker import DEFAULT_BROKER, resolve_broker

    assert resolve_broker(None) == DEFAULT_BROKER  # the announcement went with the session


def test_stale_announcement_is_ignored_and_a_dead_broker_is_a_clear_error(tmp_path, monkeypatch) -> None:
    from app.transport.local_broker import running_embedded_broker
    from tests.fixtures.brokers import free_port

    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "embedded-broker.json").write_text(json.dumps({"url": "mqtt://127.0.0.1:1", "pid": int(dead.stdout)}))
    assert running_embedded_broker() is None  # its process is gone
    (tmp_path / "embedded-broker.json").write_text(json.dumps({"url": "mqtt://127.0.0.1:1", "pid": os.getpid()}))
    assert running_embedded_broker() == "mqtt://127.0.0.1:1"
    (tmp_path / "embedded-broker.json").write_text("{half a file")
    assert running_embedded_broker() is None
    env = {**os.environ, "TINYMLOPS_DATA_DIR": str(tmp_path), "TINYMLOPS_BROKER": f"mqtt://127.0.0.1:{free_port()}"}
    result = subprocess.run([sys.executable, "-m", "app", "fleet", "list"], capture_output=True, text=True, cwd=ROOT,
                            timeout=60, env=env)
    assert result.returncode == 2
    assert "refused the connection" in result.stderr and "127.0.0.1:1 " not in result.stderr
    assert "pass --broker mqtt://host:port" in result.stderr and "Traceback" not in result.stderr


def test_fleet_list_on_a_dead_broker_is_a_clear_error(tmp_path) -> None:
    from tests.fixtures.brokers import free_port

    result = _fleet_list(f"mqtt://127.0.0.1:{free_port()}", data_dir=tmp_path)
    assert result.returncode == 2 and "refused the connection" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("kind", ["mosquitto", "embedded"])
def test_virtual_device_goes_offline_through_its_last_will(kind: str, mosquitto_factory, virtual_fleet) -> None:
    embedded = None
    if kind == "mosquitto":
        url = mosquitto_factory().url
    else:
        embedded = EmbeddedBroker()
        url = embedded.start()
    try:
        fleet = virtual_fleet(url, 2)
        with MqttConnection(url) as conn, FleetMonitor(conn) as monitor:
            wait_until(lambda: len([r for r in monitor.devices() if r.online]) == 2, what="two devices online")
            fleet.mqtt_adapter("sim-002").kill()
            wait_until(lambda: monitor.get("sim-002").state == "offline", what="last will of sim-002")
            assert monitor.get("sim-001").state == "online"
    finally:
        if embedded is not None:
            fleet.stop()
            embedded.stop()


def test_fleet_list_shows_an_offline_devices_last_model_and_when_it_was_last_heard(
        mosquitto_factory, virtual_fleet, model_image_v3, tmp_path) -> None:
    """The last will is composed at connect: after a deployment it names the old model and carries no
    time. `fleet list` shows what was last known (kept in the data dir's fleet memory) instead."""
    from app.deploy import api
    from app.protocol.image import ModelImage

    broker = mosquitto_factory()
    fleet = virtual_fleet(broker.url, 1)
    (result,) = api.deploy(model_image_v3, "sim-001", via="mqtt", broker=broker.url)
    assert result.ok, result.error_message
    deployed = ModelImage.from_bytes(model_image_v3)
    seen = json.loads(_fleet_list(broker.url, "--json", data_dir=tmp_path).stdout)["devices"]
    assert [(d["model_name"], d["model_version"]) for d in seen] == [(deployed.name, deployed.version)]
    with MqttConnection(broker.url) as conn, FleetMonitor(conn) as monitor:
        wait_until(lambda: monitor.get("sim-001") is not None)
        fleet.mqtt_adapter("sim-001").kill()
        wait_until(lambda: monitor.get("sim-001").state == "offline", what="the last will")
    out = _fleet_list(broker.url, "--json", data_dir=tmp_path)  # the default wait: the retained will comes at once
    assert out.returncode == 0, out.stderr
    (device,) = json.loads(out.stdout)["devices"]
    assert device["state"] == "offline"
    assert (device["model_name"], device["model_version"]) == (deployed.name, deployed.version)
    assert device["last_seen"] >= seen[0]["last_seen"] > 0
    table = _fleet_list(broker.url, data_dir=tmp_path)
    row = next(line for line in table.stdout.splitlines() if line.startswith("sim-001"))
    assert "offline" in row and f"{deployed.name}@{deployed.version}" in row, table.stdout
    assert row.split()[-1] != "-", table.stdout  # LAST SEEN is a time, not "never"
