"""The host side of a conformance scenario: what an operator's application sees of one device,
on the broker (`Host`) or on a serial line (`SerialHost`, the same interface). Commands go through
the application's own channel (MqttChannel, SerialChannel); everything the device sends (status,
replies, telemetry, stream) is also queued by topic leaf, so a scenario can wait for a status, an
EVENT or a STREAM window whatever the link. A serial line has no topics: messages are sorted into
the same leaves by type, and "the status" is what GET_INFO answers."""

from __future__ import annotations

import contextlib
import os
import queue
import time

from app.deploy import api
from app.protocol import messages as m
from app.protocol import topics
from app.protocol.codes import MsgType
from app.protocol.framing import frame
from app.services.channel import MqttChannel, SerialChannel
from app.transport.mqtt_link import MqttConnection
from app.transport.serial_link import SerialLink

# A reply comes in milliseconds; a loaded 2-core CI machine (ASan build of the C device) gets this.
REPLY_TIMEOUT_S = 15.0
# Telemetry comes at 1 Hz and STREAM windows every 80 ms; a loaded machine gets this long.
PUBLISH_WAIT_S = 15.0


class Host:
    """One MQTT connection to the device under test; close() when done."""

    link = "mqtt"
    push_transport = "mqtt-push"  # DeploymentResult.transport of a deployment pushed over this link

    def __init__(self, url: str, site: str, device_id: str) -> None:
        self.url, self.site, self.device_id = url, site, device_id
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

    def deploy(self, image: bytes, **kwargs) -> api.DeploymentResult:
        """The application's deployment of `image` to this device (api.deploy) over this link."""
        (result,) = api.deploy(image, [self.device_id], via="mqtt", broker=self.url, **kwargs)
        return result

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


# With nothing unsolicited coming, a serial "status" wait asks GET_INFO this often (a serial device
# sends its HELLO by itself only at boot and every HELLO_INTERVAL_S).
STATUS_ASK_S = 0.25
# Leaf a message type is sorted into on a serial line (everything else is a reply).
_SERIAL_LEAF = {MsgType.TELEMETRY: topics.TELEMETRY, MsgType.STREAM: topics.STREAM}


class _RawSerialLink(SerialLink):
    """A SerialLink that also writes bytes unframed, under its own write lock: for a port with one
    connection only (QEMU's UART socket takes one client at a time)."""

    def write_raw(self, data: bytes) -> None:
        port = self._port
        if port is None:
            raise AssertionError(f"serial port {self.url} is not open")
        with self._write_lock:
            port.write(data)


class SerialHost(Host):
    """The device under test on a serial line (a pty, or QEMU's UART socket): SerialChannel for
    commands; publish_raw writes a frame holding the bytes as they are, so a scenario can send what
    the application itself never would. On a pty through a second, write-only handle of the port;
    on a socket URL (one client at a time) through the channel's own connection."""

    link = "pty"
    push_transport = "serial"

    def __init__(self, port: str, device_id: str) -> None:
        self.port, self.device_id = port, device_id
        self.received = {leaf: queue.Queue() for leaf in (topics.STATUS, topics.REPLY, topics.TELEMETRY,
                                                           topics.STREAM)}
        # writes only: it never takes the device's bytes
        self._raw = None if "://" in port else os.open(port, os.O_WRONLY | os.O_NOCTTY)
        self._open()

    def _open(self) -> None:
        self._link = _RawSerialLink(self.port)
        self.channel = SerialChannel(self._link)
        self.channel.on_packet(self._sort)

    def _sort(self, packet: m.Packet) -> None:
        if packet.msg.TYPE == MsgType.HELLO:
            self.received[topics.STATUS].put(packet)
        self.received[_SERIAL_LEAF.get(packet.msg.TYPE, topics.REPLY)].put(packet)

    def deploy(self, image: bytes, **kwargs) -> api.DeploymentResult:
        """api.deploy over the serial port: it opens the port itself, so this host lets go of it
        meanwhile (two readers of one pty would each get part of the bytes)."""
        self.channel.close()
        try:
            (result,) = api.deploy(image, [self.device_id], via="serial", port=self.port, **kwargs)
        finally:
            self._open()
        return result

    def publish_raw(self, data: bytes) -> None:
        self.write_bytes(frame(data))

    def write_bytes(self, data: bytes) -> None:
        """Bytes on the line as they are: garbage, broken frames."""
        if self._raw is None:
            self._link.write_raw(data)
            return
        view = memoryview(data)
        while view:
            view = view[os.write(self._raw, view):]

    def wait_for(self, leaf: str, kind: type, where=lambda msg: True, timeout: float = PUBLISH_WAIT_S) -> m.Message:
        if leaf != topics.STATUS:
            return super().wait_for(leaf, kind, where, timeout)
        deadline = time.monotonic() + timeout
        q = self.received[leaf]
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = q.get(timeout=min(left, STATUS_ASK_S)).msg
            except queue.Empty:
                self.channel.send(m.GetInfo())  # the answer lands in the status queue
                continue
            if isinstance(msg, kind) and where(msg):
                return msg
        raise AssertionError(f"{self.device_id}: no matching {kind.__name__} status within {timeout} s")

    def close(self) -> None:
        self.channel.close()
        if self._raw is not None:
            with contextlib.suppress(OSError):
                os.close(self._raw)
