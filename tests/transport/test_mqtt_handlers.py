"""The MQTT side (real Mosquitto, real virtual devices): each test failed before its fix.

* `MqttConnection.unsubscribe(filter, obj.method)` compared handlers by identity, but every
  `obj.method` access is a new bound-method object: nothing was ever unsubscribed, and a stream
  view opened twice got every window twice (FleetMonitor subscribes `self._on_stream`).
* FleetMonitor numbered its commands from seq 1 in every instance; the device drops a command whose
  bytes repeat within 10 s as a QoS-1 duplicate, so a monitor restarted within 10 s could not start
  a stream (its STREAM_START seq 1 equalled the previous monitor's).
* A closed MqttChannel stayed registered as a state listener of the shared connection: every
  channel ever opened (one per deployment or rollback) was kept alive for the connection's life.
"""

from __future__ import annotations

import gc
import threading
import weakref

from app.protocol import messages as m
from app.protocol import topics
from app.protocol.codes import DeviceState, MsgType
from app.services.channel import MqttChannel
from app.services.fleet_monitor import FleetMonitor
from app.transport.mqtt_link import MqttConnection
from tests.transport.helpers import wait_until

DEVICE = "sim-001"


class Sink:
    def __init__(self) -> None:
        self.got: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()

    def on_message(self, topic: str, payload: bytes) -> None:
        with self._lock:
            self.got.append((topic, payload))


def test_unsubscribing_a_bound_method_stops_delivery(mosquitto_url: str) -> None:
    sink, marker = Sink(), Sink()
    with MqttConnection(mosquitto_url) as conn:
        conn.subscribe("review/a", sink.on_message)
        conn.subscribe("review/marker", marker.on_message)
        conn.publish("review/a", b"1", qos=1)
        wait_until(lambda: sink.got, what="first message")
        conn.unsubscribe("review/a", sink.on_message)  # a new bound-method object, equal to the first
        conn.publish("review/a", b"2", qos=1)
        conn.publish("review/marker", b"after", qos=1)  # same publisher, same QoS: delivered in order
        wait_until(lambda: marker.got, what="marker")
        assert sink.got == [("review/a", b"1")]


def _site(monitor: FleetMonitor) -> str:
    wait_until(lambda: (r := monitor.get(DEVICE)) is not None and r.online, what="device online")
    return monitor.get(DEVICE).site


def test_a_reopened_stream_delivers_each_window_once(mosquitto_url: str, virtual_fleet) -> None:
    virtual_fleet(mosquitto_url, 1)
    with MqttConnection(mosquitto_url) as conn:
        monitor = FleetMonitor(conn)
        try:
            _site(monitor)
            first: list[int] = []
            listener = lambda _id, s: first.append(s.window_seq)  # noqa: E731
            monitor.add_stream_listener(DEVICE, listener)
            wait_until(lambda: len(first) >= 2, what="stream windows")
            monitor.remove_stream_listener(DEVICE, listener)
            second: list[int] = []
            monitor.add_stream_listener(DEVICE, lambda _id, s: second.append(s.window_seq))
            wait_until(lambda: len(second) >= 8, what="stream windows after reopening")
            assert len(second) == len(set(second)), f"windows delivered more than once: {second}"
        finally:
            monitor.close()


def test_a_restarted_monitor_can_start_a_stream_at_once(mosquitto_url: str, virtual_fleet) -> None:
    fleet = virtual_fleet(mosquitto_url, 1)
    dev = fleet.device(DEVICE)
    acks: list[int] = []
    with MqttConnection(mosquitto_url) as watcher:
        reply_topic = topics.device_topic(dev.site, DEVICE, topics.REPLY)
        watcher.subscribe(reply_topic, lambda _t, p: acks.append(m.decode(p).msg.ref_type)
                          if p[1] == MsgType.ACK else None)

        with MqttConnection(mosquitto_url) as conn1:
            first = FleetMonitor(conn1)
            _site(first)
            listener = lambda _id, s: None  # noqa: E731
            first.add_stream_listener(DEVICE, listener)
            first.remove_stream_listener(DEVICE, listener)
            wait_until(lambda: acks.count(MsgType.STREAM_STOP) == 1, what="STREAM_STOP acknowledged")
            first.close()
        assert dev.hello().state == DeviceState.ONLINE

        # the operator reopens the application at once
        with MqttConnection(mosquitto_url) as conn2:
            second = FleetMonitor(conn2)
            try:
                _site(second)
                second.add_stream_listener(DEVICE, lambda _id, s: None)
                wait_until(lambda: acks.count(MsgType.STREAM_START) == 2, what="second STREAM_START acknowledged")
                assert dev.hello().state == DeviceState.STREAMING, "STREAM_START taken for a duplicate"
            finally:
                second.close()


def test_a_closed_mqtt_channel_is_released(mosquitto_url: str) -> None:
    with MqttConnection(mosquitto_url) as conn:
        refs = []
        for i in range(3):
            channel = MqttChannel(conn, "plant-r", f"dev-{i}")
            refs.append(weakref.ref(channel))
            channel.close()
        del channel
        gc.collect()
        assert [r() for r in refs] == [None, None, None]


def test_a_stream_asked_for_before_the_device_appears_reaches_its_listener(mosquitto_factory,
                                                                         virtual_fleet) -> None:
    """A plot opened on a device the monitor has not heard of yet (GUI restoring its last view) used to
    stay empty for good: the stream topic was never subscribed, though renewals made the device stream."""
    broker = mosquitto_factory()  # fresh: no retained status tells the monitor about the device early
    with MqttConnection(broker.url) as conn:
        monitor = FleetMonitor(conn)
        try:
            windows: list[int] = []
            monitor.add_stream_listener(DEVICE, lambda _id, s: windows.append(s.window_seq))
            assert monitor.get(DEVICE) is None
            virtual_fleet(broker.url, 1)
            wait_until(lambda: len(windows) >= 2, what="stream windows of a device that appeared later")
        finally:
            monitor.close()
