"""`fleet list` on the brokers plants run (issue 18): it knows when the broker has sent its retained
statuses (no fixed wait), says what it waited for, and shows every device's profile and model on
RabbitMQ too, which sends retained messages to exact topics only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from app.services.fleet_monitor import FleetMonitor
from app.transport.mqtt_link import MqttConnection
from tests.transport.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]
# Telemetry comes at about 1 Hz; a loaded 2-core CI machine may delay one by seconds.
LISTEN_S = "5"


def _fleet_list(url: str, data_dir: Path, *extra: str) -> dict:
    """`fleet list --json` with its own data dir (its fleet memory lives there)."""
    result = subprocess.run([sys.executable, "-m", "app", "fleet", "list", "--json", "--broker", url, *extra],
                            capture_output=True, text=True, cwd=ROOT, timeout=120,
                            env={**os.environ, "TINYMLOPS_DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _assert_shows(out: dict, fleet) -> None:
    devices = {d["device_id"]: d for d in out["devices"]}
    for dev in fleet.devices:
        rec = devices[dev.device_id]
        assert rec["state"] == "online", rec
        assert rec["profile"] == dev.profile.key
        assert rec["firmware"] and rec["model_name"] and rec["model_version"] >= 1


def test_fleet_list_on_mosquitto_waits_for_a_marker_not_a_fixed_time(mosquitto_factory, virtual_fleet,
                                                                     tmp_path) -> None:
    broker = mosquitto_factory()
    fleet = virtual_fleet(broker.url, 8)
    with MqttConnection(broker.url) as conn, FleetMonitor(conn) as monitor:  # every retained HELLO is there
        wait_until(lambda: len(monitor.devices()) == 8, timeout=60, what="eight devices' HELLOs")
    out = _fleet_list(broker.url, tmp_path)
    _assert_shows(out, fleet)
    assert out["broker_capabilities"]["retained_wildcard"] is True
    assert "marker" in out["waited_for"] and out["waited_s"] > 0


def test_fleet_list_on_rabbitmq_shows_every_device_with_profile_and_model(rabbitmq_url, virtual_fleet,
                                                                        tmp_path) -> None:
    fleet = virtual_fleet(rabbitmq_url, 3)
    for dev in fleet.devices:
        assert fleet.mqtt_adapter(dev.device_id).connected.wait(60)
    # no memory yet: devices name themselves by telemetry (1 Hz), listened for LISTEN_S on a loaded machine
    first = _fleet_list(rabbitmq_url, tmp_path, "--wait", LISTEN_S)
    caps = first["broker_capabilities"]
    assert (caps["retained"], caps["retained_wildcard"]) == (True, False)
    assert "wildcard" in caps["summary"] and "GET_INFO answers" in first["waited_for"]
    _assert_shows(first, fleet)
    again = _fleet_list(rabbitmq_url, tmp_path)  # a restart remembers where the fleet is: the default wait
    _assert_shows(again, fleet)
