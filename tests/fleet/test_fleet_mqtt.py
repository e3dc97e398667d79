"""The virtual fleet over real brokers: Mosquitto and the embedded one."""

import hashlib
import queue
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from app.domain.errors import ModelError
from app.fleet.fleet import VirtualFleet, load_factory_image
from app.protocol import messages as m
from app.protocol import topics
from app.protocol.codes import DeviceState, FaultMask, TelemetryFlags, XferFlags
from app.protocol.framing import crc32
from app.transport.urls import parse_broker_url

WAIT_S = 15.0  # generous: two cores shared with other test runs


class Listener:
    """A bare paho client that collects decoded messages by topic."""

    def __init__(self, url: str, topic_filter: str = "tinymlops/v1/#") -> None:
        u = parse_broker_url(url)
        self.q: queue.Queue = queue.Queue()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.c.on_message = self._on_message
        ready = threading.Event()
        self.c.on_connect = lambda *a: (self.c.subscribe(topic_filter, qos=1), ready.set())
        self.c.connect(u.host, u.port)
        self.c.loop_start()
        assert ready.wait(WAIT_S)

    def _on_message(self, client, userdata, msg) -> None:
        if msg.payload:  # empty payloads clear retained chunks
            self.q.put((msg.topic, msg.retain, m.decode(msg.payload)))

    def wait(self, pred, timeout: float = WAIT_S):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                topic, retain, packet = self.q.get(timeout=0.2)
            except queue.Empty:
                continue
            if pred(topic, retain, packet):
                return topic, retain, packet
        raise AssertionError("expected message did not arrive")

    def command(self, site: str, device: str, msg: m.Message, seq: int) -> m.Message:
        self.c.publish(topics.device_topic(site, device, topics.CMD), m.encode(msg, seq), qos=1)
        return self.wait(lambda t, r, p: t.endswith(f"/{device}/reply") and p.seq == seq)[2].msg

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture(params=["mosquitto", "embedded"])
def broker_url(request):
    return request.getfixturevalue("mosquitto_url" if request.param == "mosquitto" else "embedded_broker_url")


def test_missing_factory_model_refuses_to_start(tmp_path):
    with pytest.raises(ModelError, match="factory model"):
        load_factory_image(tmp_path / "factory.tmlm")


def test_fleet_presence_telemetry_and_faults(broker_url, virtual_fleet):
    virtual_fleet(broker_url, 5, seed=1)
    listener = Listener(broker_url)
    try:
        # retained status: a late subscriber gets every device at once. The broker is the session's: an
        # earlier test's fleet may have left a retained OFFLINE status of the same ids (or of more
        # devices), which the subscription can deliver before this fleet's; each id's latest counts
        ids = {f"sim-00{i}" for i in range(1, 6)}
        seen = {}
        while {d for d, h in seen.items() if h.state != DeviceState.OFFLINE} != ids:
            topic, retain, p = listener.wait(lambda t, r, p: t.endswith("/status") and p.msg.device_id in ids)
            seen[p.msg.device_id] = p.msg
        assert all(h.state in (DeviceState.ONLINE, DeviceState.STREAMING) for h in seen.values())
        factory = load_factory_image()
        factory_sha = hashlib.sha256(factory).digest()[:8]
        assert all(h.model_sha == factory_sha for h in seen.values())
        late = Listener(broker_url, "tinymlops/v1/+/+/status")
        _, retain, p = late.wait(lambda t, r, p: True)
        assert retain
        late.close()

        # telemetry with a score from the factory model; sim-004 boots faulty and alarms
        scores: dict[str, m.Telemetry] = {}
        while len(scores) < 5:
            topic, _, p = listener.wait(lambda t, r, p: t.endswith("/telemetry"))
            scores[topics.parse_device_topic(topic)[1]] = p.msg
        healthy = scores["sim-001"]
        assert healthy.model_version == seen["sim-001"].model_version and healthy.score > 0
        assert not healthy.flags & TelemetryFlags.ALARM
        assert scores["sim-004"].flags & TelemetryFlags.ALARM and scores["sim-004"].score > scores["sim-004"].threshold

        # a fault switched on over the protocol raises the score above the threshold
        site = seen["sim-001"].site
        ack = listener.command(site, "sim-001", m.SetFault(int(FaultMask.IMBALANCE | FaultMask.BEARING_OUTER), 0.9), 41)
        assert isinstance(ack, m.Ack)
        _, _, p = listener.wait(lambda t, r, p: t.endswith("sim-001/telemetry") and p.msg.flags & TelemetryFlags.ALARM)
        assert p.msg.score > p.msg.threshold
    finally:
        listener.close()


def test_last_will_announces_a_vanished_device(mosquitto_url):
    fleet = VirtualFleet(mosquitto_url, 1, seed=2)
    fleet.start()
    listener = Listener(mosquitto_url, "tinymlops/v1/+/+/status")
    try:
        listener.wait(lambda t, r, p: p.msg.device_id == "sim-001" and p.msg.state != DeviceState.OFFLINE)
        fleet.mqtt_adapter("sim-001").kill()  # no DISCONNECT: the broker must publish the will
        # the will comes when the broker notices the dead socket (closed at once here)
        listener.wait(lambda t, r, p: p.msg.device_id == "sim-001" and not r and p.msg.state == DeviceState.OFFLINE,
                      timeout=40)
    finally:
        listener.close()
        fleet.stop()


def test_pull_transfer_from_retained_chunks(mosquitto_url, virtual_fleet, model_image_v3):
    fleet = virtual_fleet(mosquitto_url, 2, seed=3, profiles=["stm32l4r5"])
    listener = Listener(mosquitto_url)
    try:
        image = model_image_v3
        sha = hashlib.sha256(image).digest()
        site = fleet.devices[0].site
        prefix = topics.model_chunk_prefix(site, sha.hex())
        chunk = 1024
        for i in range(0, len(image), chunk):
            data = image[i:i + chunk]
            listener.c.publish(f"{prefix}/{i // chunk}", m.encode(m.XferChunk(0, i // chunk, crc32(data), data)),
                               qos=1, retain=True)
        for n, dev in enumerate(fleet.devices):
            if dev.site != site:
                continue
            st = listener.command(site, dev.device_id,
                                  m.XferBegin(5, len(image), chunk, int(XferFlags.PULL), sha, "pump-ae", 3, prefix),
                                  100 + n)
            assert isinstance(st, m.XferStatus)
            listener.wait(lambda t, r, p, d=dev.device_id: t.endswith(f"{d}/reply")
                          and isinstance(p.msg, m.XferStatus) and p.msg.received == p.msg.n_chunks)
            lat = listener.command(site, dev.device_id, m.XferCommit(5, 1, 0, 3), 200 + n)
            assert isinstance(lat, m.Latency) and lat.model_version == 3
            listener.wait(lambda t, r, p, d=dev.device_id: t.endswith(f"{d}/telemetry") and p.msg.model_version == 3)
        for i in range(-(-len(image) // chunk)):
            listener.c.publish(f"{prefix}/{i}", b"", qos=1, retain=True)
    finally:
        listener.close()
