"""The host side of a conformance scenario: what an operator's application sees of one device on
the broker. Commands go through the application's own MqttChannel; everything the device
publishes (status, replies, telemetry, stream) is also queued by topic leaf, so a scenario can wait
for a retained status, an EVENT or a STREAM window."""

from __future__ import annotations

import queue
import time

from app.protocol import messages as m
from app.protocol import topics
from app.services.channel import MqttChannel
from app.transport.mqtt_link import MqttConnection

# A reply comes in milliseconds; a loaded 2-core CI machine (ASan build of the C device) gets this.
REPLY_TIMEOUT_S = 15.0
# Telemetry comes at 1 Hz and STREAM windows every 80 ms; a loaded machine gets this long.
PUBLISH_WAIT_S = 15.0


class Host:
    """One MQTT connection to the device under test; close() when done."""

    def __init__(self, url: str, site: str, device_id: str) -> None:
        self.site, self.device_id = site, device_id
        self.conn = MqttConnection(url)
        self.conn.connect()
        self.received: dict[str, queue.Queue[m.Packet]] = {}
        for leaf in (topics.STATUS, topics.REPLY, topics.TELEMETRY, topics.STREAM):
            q: queue.Queue[m.Packet] = queue.Queue()
            self.received[leaf] = q
            self.conn.subscribe(topics.device_topic(site, device_id, leaf),
                                lambda _t, payload, q=q: q.put(m.decode(payload)))
        self.conn.wait_subscribed()
        self.channel = MqttChannel(self.conn, site, device_id)

    def request(self, msg: m.Message, timeout: float = REPLY_TIMEOUT_S) -> m.Message:
        """The device's reply; DeviceError (with `.code`) when it answers ERROR."""
        return self.channel.request(msg, timeout=timeout).msg

    def publish_raw(self, data: bytes) -> None:
        """Bytes on the command topic as they are (bad messages, duplicates)."""
        self.conn.publish(topics.device_topic(self.site, self.device_id, topics.CMD), data, qos=1)

    def wait_for(self, leaf: str, kind: type, where=lambda msg: True, timeout: float = PUBLISH_WAIT_S) -> m.Message:
        """The next message of `kind` on `leaf` for which `where` holds (others are skipped)."""
        deadline = time.monotonic() + timeout
        q = self.received[leaf]
        while (left := deadline - time.monotonic()) > 0:
            try:
                packet = q.get(timeout=left)
            except queue.Empty:
                break
            if isinstance(packet.msg, kind) and where(packet.msg):
                return packet.msg
        raise AssertionError(f"{self.device_id}: no matching {kind.__name__} on {leaf} within {timeout} s")

    def wait_reply_seq(self, seq: int, timeout: float = REPLY_TIMEOUT_S) -> m.Packet:
        """The next reply carrying `seq` (for raw commands sent with publish_raw)."""
        deadline = time.monotonic() + timeout
        q = self.received[topics.REPLY]
        while (left := deadline - time.monotonic()) > 0:
            try:
                packet = q.get(timeout=left)
            except queue.Empty:
                break
            if packet.seq == seq:
                return packet
        raise AssertionError(f"{self.device_id}: no reply with seq {seq} within {timeout} s")

    def drain(self, leaf: str) -> None:
        q = self.received[leaf]
        while not q.empty():
            q.get_nowait()

    def close(self) -> None:
        self.channel.close()
        self.conn.close()
