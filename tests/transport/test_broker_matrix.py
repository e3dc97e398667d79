"""The key MQTT paths on every broker a plant may run (issue 18): the embedded amqtt broker,
Mosquitto, RabbitMQ's MQTT plugin (retained messages to exact topics only), and any broker named by
TINYMLOPS_TEST_BROKER=mqtt://... (a plant's EMQX, HiveMQ, VerneMQ), so its IT can prove it first.

Each test starts its own virtual fleet on the session's broker: presence, last will and streaming;
push deployment and rollback; a pull rollout (forced) and the automatic choice the probe makes.
"""

from __future__ import annotations

import os
import threading

import pytest

from app.deploy import api
from app.protocol.image import sha256
from app.services.fleet_memory import FleetMemory
from app.services.fleet_monitor import FleetMonitor
from app.transport.broker_probe import capabilities_of
from app.transport.mqtt_link import MqttConnection
from tests.transport.helpers import wait_until

EXTERNAL = os.environ.get("TINYMLOPS_TEST_BROKER", "")
# A RabbitMQ or remote broker on a loaded CI machine: devices connect and say HELLO within this.
PRESENCE_S = 30.0


@pytest.fixture(params=["embedded", "mosquitto", "rabbitmq", "external"])
def broker_url(request: pytest.FixtureRequest, tmp_path, monkeypatch) -> str:
    """One broker of the matrix; the data dir (fleet memory, history) is the test's own."""
    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(tmp_path / "data"))
    if request.param == "external":
        if not EXTERNAL:
            pytest.skip("set TINYMLOPS_TEST_BROKER=mqtt://host:port to run the matrix against your broker")
        return EXTERNAL
    return request.getfixturevalue({"embedded": "embedded_broker_url", "mosquitto": "mosquitto_url",
                                    "rabbitmq": "rabbitmq_url"}[request.param])


def _connected(fleet) -> None:
    for dev in fleet.devices:
        assert fleet.mqtt_adapter(dev.device_id).connected.wait(PRESENCE_S), f"{dev.device_id} did not connect"


def test_presence_last_will_and_streaming(broker_url: str, virtual_fleet, tmp_path) -> None:
    fleet = virtual_fleet(broker_url, 2)
    _connected(fleet)
    with MqttConnection(broker_url) as conn, FleetMonitor(conn, memory=FleetMemory(tmp_path / "m.sqlite3")) as monitor:
        def shown() -> bool:  # every device with its profile and model, not only its telemetry
            return all((r := monitor.get(d.device_id)) is not None and r.online and r.model_name and r.profile
                       for d in fleet.devices)

        wait_until(shown, timeout=PRESENCE_S, what="every device with its profile and model")
        windows: list[int] = []
        got = threading.Event()

        def on_window(device_id: str, stream) -> None:
            windows.append(stream.window_seq)
            got.set()

        monitor.add_stream_listener("sim-001", on_window)
        assert got.wait(PRESENCE_S), "no stream window"
        monitor.remove_stream_listener("sim-001", on_window)
        fleet.mqtt_adapter("sim-002").kill()  # vanishes: the broker publishes its will
        wait_until(lambda: monitor.get("sim-002").state == "offline", timeout=PRESENCE_S, what="the last will")
        assert monitor.get("sim-001").online


def test_push_deployment_and_rollback(broker_url: str, virtual_fleet, model_image_v3) -> None:
    fleet = virtual_fleet(broker_url, 1)
    _connected(fleet)
    dev = fleet.device("sim-001")
    factory_version = dev.active_model.image.version
    (result,) = api.deploy(model_image_v3, "sim-001", via="mqtt", broker=broker_url, pull=False)
    assert result.outcome == "ok", result.error_message
    assert result.transport == "mqtt-push"
    assert dev.active_model.sha256 == sha256(model_image_v3)
    back = api.rollback("sim-001", via="mqtt", broker=broker_url)
    assert back.ok, back.error_message
    assert back.model_version == factory_version


def test_pull_rollout_and_the_probes_choice(broker_url: str, virtual_fleet, model_image_v3) -> None:
    fleet = virtual_fleet(broker_url, 3)
    _connected(fleet)
    pulled = api.deploy(model_image_v3, ["sim-001", "sim-002"], via="mqtt", broker=broker_url, pull=True)
    for r in pulled:
        assert r.outcome == "ok", r.error_message
        assert r.transport == "mqtt-pull"
    # without a forced way, a fleet deployment pulls where the broker sends retained chunks to the
    # devices' wildcard subscriptions and pushes where it does not
    with MqttConnection(broker_url) as conn:
        pulls = capabilities_of(conn).wildcard_retained_ok
    auto, _already = api.deploy(model_image_v3, ["sim-003", "sim-001"], via="mqtt", broker=broker_url)
    assert auto.outcome == "ok", auto.error_message
    assert auto.transport == ("mqtt-pull" if pulls else "mqtt-push")
    for dev in fleet.devices:
        assert dev.active_model.sha256 == sha256(model_image_v3)
