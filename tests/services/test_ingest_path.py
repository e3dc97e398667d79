"""The MQTT ingest path after its per-message cuts (issue 17): under a burst on a real Mosquitto every
TELEMETRY is decoded, counted, handed to the listeners as its own snapshot and queued for the history."""

from __future__ import annotations

import math
import threading

import numpy as np
import paho.mqtt.client as mqtt

from app.protocol import messages as m
from app.protocol import topics
from app.services import telemetry_history as th
from app.services.fleet_monitor import DeviceRecord, FleetMonitor
from app.services.telemetry_history import TelemetryHistory
from app.transport.mqtt_link import MqttConnection
from app.transport.urls import parse_broker_url
from tests.transport.helpers import WAIT_S, wait_until

# A burst big enough to keep the monitor's network thread busy, small enough for a quick test.
DEVICES = 20
BURST = 2000
# 2,000 loopback messages take well under a second; the rest bounds a failing run on a loaded box.
BURST_WAIT_S = 60.0


def _publisher(url: str) -> mqtt.Client:
    b = parse_broker_url(url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="burst-publisher")
    connected = threading.Event()
    client.on_connect = lambda *a: connected.set()
    client.connect(b.host, b.port)
    client.loop_start()
    assert connected.wait(WAIT_S)
    return client


def test_a_burst_is_decoded_counted_and_delivered_message_by_message(mosquitto_factory, tmp_path) -> None:
    broker = mosquitto_factory()
    pub = _publisher(broker.url)
    ids = [f"burst-{d:02d}" for d in range(DEVICES)]
    for device_id in ids:
        hello = m.Hello(device_id=device_id, location="plant-b/line-1", model_version=2)
        pub.publish(topics.device_topic("plant-b", device_id, topics.STATUS), m.encode(hello), qos=1,
                    retain=True).wait_for_publish(WAIT_S)
    got: list[tuple[str, DeviceRecord]] = []
    with MqttConnection(broker.url) as conn, TelemetryHistory(tmp_path / "h.sqlite3") as history:
        monitor = FleetMonitor(conn)
        monitor.add_listener(history.listener)
        monitor.add_listener(lambda event, record: got.append((event, record)))
        conn.wait_subscribed()
        wait_until(lambda: len(monitor.devices()) == DEVICES, what="every HELLO")
        got.clear()
        for i in range(BURST):  # features[0] numbers the message; message i comes from device i % DEVICES
            tel = m.Telemetry(uptime_ms=1000 * i, window_seq=i, model_version=2, score=i / 8, threshold=100.0,
                              flags=4 if i % 7 == 0 else 0, features=(float(i), 0.5, -1.25))
            pub.publish(topics.device_topic("plant-b", ids[i % DEVICES], topics.TELEMETRY), m.encode(tel, i), qos=0)
        wait_until(lambda: monitor.counters["telemetry"] >= BURST, BURST_WAIT_S, "every telemetry decoded")
        assert history.flush()
        monitor.close()
        assert monitor.counters["telemetry"] == BURST and history.written == BURST
        assert not any(k.startswith("bad_") for k in monitor.counters)
    pub.loop_stop()
    pub.disconnect()

    telemetry = [record for event, record in got if event == "telemetry"]
    assert len(telemetry) == BURST
    # each listener call kept its own record: one still held after the burst shows its own message
    numbers = sorted(int(r.features[0]) for r in telemetry)
    assert numbers == list(range(BURST))
    for record in telemetry:
        i = int(record.features[0])
        assert record.device_id == ids[i % DEVICES] and record.uptime_s == i
        assert record.features[1:] == (0.5, -1.25)
        assert record.score == (None if i % 7 == 0 else i / 8)  # NO_MODEL flag: no score
    assert len({id(r) for r in telemetry}) == BURST


def test_a_snapshot_is_an_equal_independent_copy() -> None:
    record = DeviceRecord(device_id="sim-001", score=0.5, features=(1.0, 2.0), hello=m.Hello(device_id="sim-001"))
    copy = record.snapshot()
    assert copy == record and copy is not record and type(copy) is DeviceRecord
    record.score, record.features, record.state = 0.9, (3.0,), "offline"
    assert (copy.score, copy.features, copy.state) == (0.5, (1.0, 2.0), "online")


def test_feature_blobs_are_little_endian_float32_also_beyond_its_range() -> None:
    for features in [(), (1.5, -2.25), tuple(np.random.default_rng(1).normal(size=36).tolist()),
                     (1e39, -1e39, math.inf, 3.5e38)]:
        blob = th._features_blob(features)
        with np.errstate(over="ignore"):
            assert blob == np.asarray(features, "<f4").tobytes()
