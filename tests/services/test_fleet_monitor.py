"""FleetMonitor against the real Mosquitto, with hand-made devices (real paho clients with a last will)."""

from __future__ import annotations

import logging
import struct
import threading
import time

import paho.mqtt.client as mqtt

from app.protocol import messages as m
from app.protocol import topics
from app.protocol.codes import StateLabel, TelemetryFlags
from app.services.channel import SerialChannel
from app.services.fleet_monitor import DeviceRecord, FleetMonitor
from app.transport.mqtt_link import MqttConnection
from app.transport.urls import parse_broker_url
from tests.transport.helpers import WAIT_S, wait_until
from tests.transport.ptys import PtyDevice


class HandDevice:
    """A bare paho client acting as a device: retained HELLO, a last will, telemetry on demand."""

    def __init__(self, url: str, device_id: str, site: str = "plant-t", will_model: bool = True) -> None:
        self.hello = m.Hello(device_id=device_id, location=f"{site}/line-1/pump-1", profile="stm32f446",
                             firmware="1.2.3", model_name="pump-ae", model_version=4)
        self.status = topics.device_topic(site, device_id, topics.STATUS)
        self.telemetry = topics.device_topic(site, device_id, topics.TELEMETRY)
        self.cmd = topics.device_topic(site, device_id, topics.CMD)
        self.commands: list[m.Packet] = []
        will = m.Hello(**{**self.hello.__dict__, "state": 0,
                          **({} if will_model else {"model_name": "", "model_version": 0})})
        b = parse_broker_url(url)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"hand-{device_id}")
        self.client.will_set(self.status, m.encode(will), qos=1, retain=True)
        self.client.on_message = lambda c, u, msg: self.commands.append(m.decode(msg.payload))
        connected = threading.Event()
        self.client.on_connect = lambda *a: connected.set()
        self.client.connect(b.host, b.port, keepalive=30)
        self.client.loop_start()
        assert connected.wait(WAIT_S)
        self.client.subscribe(self.cmd, qos=1)
        self.client.publish(self.status, m.encode(self.hello), qos=1, retain=True).wait_for_publish(WAIT_S)

    def send_telemetry(self, score: float, alarm: bool = False) -> None:
        tel = m.Telemetry(uptime_ms=5000, window_seq=1, model_version=4, score=score, threshold=0.5,
                          flags=int(TelemetryFlags.ALARM) if alarm else 0, shaft_hz=24.7, features=(1.0, 2.0))
        self.client.publish(self.telemetry, m.encode(tel), qos=0)

    def crash(self) -> None:
        self.client.loop_stop()
        self.client.socket().close()

    def clear(self, url: str) -> None:
        """Remove the retained status so other tests start clean."""
        with MqttConnection(url) as conn:
            conn.publish(self.status, b"", qos=1, retain=True)
            conn.wait_published()


def test_presence_telemetry_and_last_will(mosquitto_url: str) -> None:
    events: list[tuple[str, DeviceRecord]] = []
    dev_a = HandDevice(mosquitto_url, "hand-a")
    dev_b = HandDevice(mosquitto_url, "hand-b")
    try:
        with MqttConnection(mosquitto_url) as conn, FleetMonitor(conn) as monitor:
            monitor.add_listener(lambda event, rec: events.append((event, rec)))
            wait_until(lambda: {r.device_id for r in monitor.devices()} >= {"hand-a", "hand-b"}, what="both devices")
            rec = monitor.get("hand-a")
            assert rec is not None
            assert (rec.state, rec.profile, rec.firmware, rec.model_name, rec.model_version, rec.site) == (
                "online", "stm32f446", "1.2.3", "pump-ae", 4, "plant-t")
            dev_a.send_telemetry(0.9, alarm=True)
            wait_until(lambda: (monitor.get("hand-a") or rec).score is not None, what="telemetry")
            rec = monitor.get("hand-a")
            assert rec is not None and abs(rec.score - 0.9) < 1e-6 and rec.alarm and abs(rec.shaft_hz - 24.7) < 1e-4
            dev_b.crash()
            wait_until(lambda: (monitor.get("hand-b") or rec).state == "offline", what="last will")
            assert ("offline", "hand-b") in [(e, r.device_id) for e, r in events]
            assert monitor.get("hand-a").state == "online"
            # the record holds the enum, not a bare word (which still compares and prints the same)
            assert monitor.get("hand-b").state is StateLabel.OFFLINE
            assert monitor.get("hand-a").state is StateLabel.ONLINE
    finally:
        dev_a.client.disconnect()
        dev_a.client.loop_stop()
        dev_a.clear(mosquitto_url)
        dev_b.clear(mosquitto_url)


def test_bad_messages_are_counted_per_reason_never_raised(mosquitto_factory) -> None:
    base = f"{topics.ROOT}/plant-bad"
    # a broker of its own: on the shared one, other tests' devices add their own counts
    with MqttConnection(mosquitto_factory().url) as conn, FleetMonitor(conn) as monitor:
        good = m.encode(m.Telemetry(score=0.1))
        conn.publish(f"{base}/dev-x/telemetry", b"\x01\x02\x00\x00", qos=1)  # truncated header/payload
        conn.publish(f"{base}/dev-x/telemetry", b"\x09" + good[1:], qos=1)  # unknown version
        conn.publish(f"{base}/dev-x/telemetry", b"\x01\x7f\x00\x00\x00\x00", qos=1)  # unknown type
        conn.publish(f"{base}/dev-x/telemetry", m.encode(m.Ack()), qos=1)  # wrong type for the topic
        bad_id = bytearray(m.encode(m.Hello(device_id="ab", location="plant-bad")))
        bad_id[bad_id.index(b"ab")] = 0xFF  # invalid UTF-8 in the id
        conn.publish(f"{base}/dev-x/status", bytes(bad_id), qos=1)
        conn.publish(f"{base}/dev-y/status", m.encode(m.Hello(device_id="someone-else")), qos=1)
        conn.publish(f"{base}/dev-x/telemetry", good, qos=1)
        wait_until(lambda: monitor.counters["bad_unknown_device"] == 1, what="the good message after the bad ones")
        c = monitor.counters
        assert c["bad_malformed"] == 2  # short message + invalid UTF-8
        assert c["bad_unsupported_version"] == 1
        assert c["bad_unknown_type"] == 1
        assert c["bad_wrong_type"] == 1
        assert c["bad_id_mismatch"] == 1
        assert monitor.counters["telemetry"] == 0  # dev-x never said HELLO: its telemetry makes no device
        assert [r.device_id for r in monitor.devices() if r.site == "plant-bad"] == []


def test_silent_device_becomes_offline(mosquitto_url: str) -> None:
    dev = HandDevice(mosquitto_url, "hand-quiet")
    try:
        with MqttConnection(mosquitto_url) as conn, FleetMonitor(conn, stale_after_s=1.0) as monitor:
            # events, not polled states: with a 1 s staleness the device may be offline again before a poll
            events: list[tuple[str, str]] = []
            monitor.add_listener(lambda event, rec: events.append((event, rec.state)) if rec.device_id == "hand-quiet"
                                 else None)
            wait_until(lambda: monitor.get("hand-quiet") is not None)
            wait_until(lambda: ("offline", "offline") in events, what="stale device shown offline")
            went_offline = events.index(("offline", "offline"))
            dev.send_telemetry(0.2)
            wait_until(lambda: ("changed", "online") in events[went_offline:], what="back online on telemetry")
    finally:
        dev.client.disconnect()
        dev.client.loop_stop()
        dev.clear(mosquitto_url)


def test_stream_listener_starts_and_stops_the_stream(mosquitto_url: str) -> None:
    dev = HandDevice(mosquitto_url, "hand-stream")
    windows: list[m.Stream] = []
    try:
        with MqttConnection(mosquitto_url) as conn, FleetMonitor(conn) as monitor:
            wait_until(lambda: monitor.get("hand-stream") is not None)

            def listener(device_id: str, stream: m.Stream) -> None:
                windows.append(stream)

            monitor.add_stream_listener("hand-stream", listener)
            wait_until(lambda: any(isinstance(p.msg, m.StreamStart) for p in dev.commands), what="STREAM_START")
            stream_topic = topics.device_topic("plant-t", "hand-stream", topics.STREAM)
            window = m.Stream(window_seq=1, sample_rate=3200, scale=0.001, samples=[[1, 2, 3], [4, 5, 6]])

            def delivered() -> bool:  # republished until the monitor's subscription is in place
                dev.client.publish(stream_topic, m.encode(window), qos=0)
                return bool(windows)

            wait_until(delivered, what="a window through the stream subscription")
            assert windows[0] == window
            monitor.remove_stream_listener("hand-stream", listener)
            wait_until(lambda: any(isinstance(p.msg, m.StreamStop) for p in dev.commands), what="STREAM_STOP")
    finally:
        dev.client.disconnect()
        dev.client.loop_stop()
        dev.clear(mosquitto_url)


def test_serial_device_appears_in_the_fleet() -> None:
    from app.protocol.framing import FrameDecoder, frame

    pty = PtyDevice()
    try:
        with FleetMonitor(None) as monitor, SerialChannel.open(pty.path) as channel:
            monitor.attach_serial(channel)
            decoder = FrameDecoder()
            got: list[bytes] = []
            wait_until(lambda: got.extend(decoder.feed(pty.read(0.05))) or got, what="GET_INFO on the line")
            packet = m.decode(got[0])
            assert isinstance(packet.msg, m.GetInfo)
            hello = m.Hello(device_id="usb-1", location="bench/a/b", profile="nrf52840")
            pty.write(frame(m.encode(hello, packet.seq)))
            pty.write(frame(m.encode(m.Telemetry(score=0.3, threshold=0.5), 9)))
            wait_until(lambda: (monitor.get("usb-1") or DeviceRecord("x")).score is not None)
            rec = monitor.get("usb-1")
            assert rec.transport == "serial" and rec.profile == "nrf52840" and abs(rec.score - 0.3) < 1e-6
            pty.vanish()
            wait_until(lambda: monitor.get("usb-1").state == "offline", what="offline when the port vanishes")
    finally:
        pty.close()


def _stream_payload(seq: int, sample_rate: int, n: int, axes: int) -> bytes:
    body = struct.pack("<IIfHB", seq, sample_rate, 0.001, n, axes) + bytes(n * axes * 2)
    return struct.pack("<BBHH", 1, m.MsgType.STREAM, 0, len(body)) + body


def test_malformed_streams_are_counted_and_never_reach_the_live_feed(mosquitto_url: str, caplog) -> None:
    from app.ui.live_feed import WAVE_SECONDS, DeviceFeed

    dev = HandDevice(mosquitto_url, "hand-fuzz")
    feed = DeviceFeed("hand-fuzz")
    try:
        with MqttConnection(mosquitto_url) as conn, FleetMonitor(conn) as monitor:
            wait_until(lambda: monitor.get("hand-fuzz") is not None)
            monitor.add_stream_listener("hand-fuzz", feed.on_stream)
            wait_until(lambda: any(isinstance(p.msg, m.StreamStart) for p in dev.commands), what="STREAM_START")
            topic = topics.device_topic("plant-t", "hand-fuzz", topics.STREAM)

            def first_window_arrived() -> bool:  # republished until the monitor's subscription is in place
                dev.client.publish(topic, _stream_payload(1, 3200, 4, 3), qos=1)
                return feed.windows > 0

            wait_until(first_window_arrived, what="a good window")
            before = monitor.counters["bad_malformed"]
            bad = [_stream_payload(2, 3200, 4, 2), _stream_payload(2, 3200, 4, 0), _stream_payload(2, 3200, 1, 255),
                   _stream_payload(2, 0xFFFFFFFF, 4, 3), _stream_payload(2, 0, 4, 3)]
            for payload in bad:
                dev.client.publish(topic, payload, qos=1)
            dev.client.publish(topic, _stream_payload(99, 3200, 4, 3), qos=1)  # QoS 1, one publisher: in order
            wait_until(lambda: feed.last_seq == 99, what="the good window after the bad ones")
            assert monitor.counters["bad_malformed"] - before == len(bad)
            assert monitor.counters["listener_errors"] == 0
            assert feed.sample_rate == 3200 and feed.wave.capacity == int(WAVE_SECONDS * 3200)
            monitor.remove_stream_listener("hand-fuzz", feed.on_stream)
    finally:
        dev.client.disconnect()
        dev.client.loop_stop()
        dev.clear(mosquitto_url)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text


def test_telemetry_without_hello_makes_no_ghost_device(mosquitto_factory) -> None:
    with MqttConnection(mosquitto_factory().url) as conn, FleetMonitor(conn) as monitor:  # no other test's devices
        events: list[str] = []
        monitor.add_listener(lambda event, rec: events.append(f"{event}:{rec.device_id}"))
        conn.publish(f"{topics.ROOT}/plant-ghost/ghost-1/telemetry", m.encode(m.Telemetry(score=0.9)), qos=1)
        wait_until(lambda: monitor.counters["bad_unknown_device"] == 1, what="the ghost's telemetry")
        assert monitor.get("ghost-1") is None and not events


def test_a_spoofed_hello_cannot_size_work(mosquitto_url: str) -> None:
    from app.deploy.rollout import find_devices
    from app.protocol.codes import MAX_CHUNK, MAX_SAMPLE_RATE_HZ, MIN_CHUNK

    status = topics.device_topic("plant-spoof", "spoof-1", topics.STATUS)
    spoof = m.Hello(device_id="spoof-1", location="plant-spoof/l/m", max_chunk=1, sample_rate=0xFFFFFFFF)
    with MqttConnection(mosquitto_url) as conn:
        conn.publish(status, m.encode(spoof), qos=1, retain=True)
        conn.wait_published()
        try:
            with FleetMonitor(conn) as monitor:
                wait_until(lambda: monitor.get("spoof-1") is not None, what="the spoofed HELLO")
                hello = monitor.get("spoof-1").hello
                assert (hello.max_chunk, hello.sample_rate) == (MIN_CHUNK, MAX_SAMPLE_RATE_HZ)
            assert find_devices(conn, ["spoof-1"])["spoof-1"].max_chunk == MIN_CHUNK
            big = m.Hello(device_id="spoof-1", location="plant-spoof/l/m", max_chunk=0xFFFF)
            assert big.clamped().max_chunk == MAX_CHUNK and m.Hello().clamped().max_chunk == 0  # 0: not said
        finally:
            conn.publish(status, b"", qos=1, retain=True)
            conn.wait_published()


def test_an_offline_device_keeps_its_last_known_model_and_last_seen_across_runs(mosquitto_url: str,
                                                                              tmp_path) -> None:
    from app.services.fleet_memory import FleetMemory

    memory_path = tmp_path / "tinymlops.sqlite3"
    dev = HandDevice(mosquitto_url, "hand-gone", will_model=False)  # a will composed before any model
    try:
        with MqttConnection(mosquitto_url) as conn, \
                FleetMonitor(conn, memory=FleetMemory(memory_path)) as monitor:
            wait_until(lambda: monitor.get("hand-gone") is not None)
            dev.send_telemetry(0.2)
            wait_until(lambda: monitor.get("hand-gone").score is not None, what="telemetry")
            heard = monitor.get("hand-gone").last_seen
        closed = time.time()  # the first run has ended: what it heard is in the memory
        assert heard > 0
        dev.crash()  # the broker publishes the will: OFFLINE, no model
        with MqttConnection(mosquitto_url) as conn:
            seen: list[m.Hello] = []
            conn.subscribe(dev.status, lambda _t, p: seen.append(m.decode(p).msg) if p else None)
            wait_until(lambda: seen and seen[-1].state == 0, what="the last will")
            # a later run (fleet list, the GUI started tomorrow) only finds the will on the broker
            with FleetMonitor(conn, memory=FleetMemory(memory_path)) as later:
                wait_until(lambda: later.get("hand-gone") is not None)
                rec = later.get("hand-gone")
        assert rec.state == "offline" and rec.state is StateLabel.OFFLINE
        assert (rec.model_name, rec.model_version, rec.profile, rec.firmware) == ("pump-ae", 4, "stm32f446", "1.2.3")
        # when it was last heard in the first run: its telemetry, or a status the device sent a moment
        # after it (a fresh-clone run saw one 0.4 ms later); never the will's arrival, never unknown
        assert heard <= rec.last_seen <= closed
    finally:
        dev.clear(mosquitto_url)
