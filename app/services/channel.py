"""DeviceChannel: the one small host <-> device interface, over serial or MQTT.

`send` fires a command; `request` waits for the reply that echoes the command's `seq` (PROTOCOL.md
section 1), retrying with the same `seq` so the device can drop duplicates. Every decoded packet,
reply or not, also goes to `on_packet` listeners. Undecodable input is counted per reason and
logged, never raised on the receiving thread.
"""

from __future__ import annotations

import logging
import random
import threading
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable

from app.domain.errors import DeviceError, LinkError, ProtocolError
from app.protocol import messages as m
from app.protocol import topics
from app.protocol.codes import ERROR_TEXT, ErrorCode, MsgType, drop_reason
from app.transport.mqtt_link import MqttConnection
from app.transport.serial_link import SerialLink

log = logging.getLogger(__name__)

# A device answers most commands within milliseconds; a slow link or a busy Python device within 2 s.
REQUEST_TIMEOUT_S = 2.0
# Resends (same seq) before giving up: covers a frame lost to line noise, not a dead device.
REQUEST_RETRIES = 2
# Sequence numbers are 16 bits on the wire.
SEQ_MODULO = 1 << 16

# Which message types can answer which command (section 3); ERROR answers any. Matching the type
# as well as the seq keeps an unsolicited HELLO or XFER_STATUS from being taken for a reply.
REPLY_TYPES: dict[MsgType, frozenset[MsgType]] = {
    MsgType.GET_INFO: frozenset({MsgType.HELLO}),
    MsgType.STREAM_START: frozenset({MsgType.ACK}),
    MsgType.STREAM_STOP: frozenset({MsgType.ACK}),
    MsgType.XFER_BEGIN: frozenset({MsgType.XFER_STATUS}),
    MsgType.XFER_CHUNK: frozenset({MsgType.ACK}),
    MsgType.XFER_QUERY: frozenset({MsgType.XFER_STATUS}),
    MsgType.XFER_COMMIT: frozenset({MsgType.LATENCY}),
    MsgType.XFER_ABORT: frozenset({MsgType.ACK}),
    MsgType.CONFIRM: frozenset({MsgType.HELLO, MsgType.ACK}),
    MsgType.ROLLBACK: frozenset({MsgType.HELLO}),
    MsgType.BENCHMARK: frozenset({MsgType.LATENCY}),
    MsgType.REBOOT: frozenset({MsgType.HELLO, MsgType.ACK}),
    MsgType.SET_FAULT: frozenset({MsgType.ACK}),
    MsgType.ACTIVATE: frozenset({MsgType.LATENCY}),
}

PacketCallback = Callable[[m.Packet], None]
StateCallback = Callable[[bool, str], None]


class _Waiter:
    __slots__ = ("accepts", "event", "failure", "packet")

    def __init__(self, accepts: frozenset[MsgType]) -> None:
        self.accepts = accepts
        self.event = threading.Event()
        self.packet: m.Packet | None = None
        self.failure: str | None = None


class DeviceChannel(ABC):
    """Request/reply and listeners on top of a byte transport; subclasses provide `_transmit`."""

    name: str = "device"

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._seq = random.randrange(SEQ_MODULO)  # two operators on one device rarely collide
        self._waiters: dict[int, _Waiter] = {}
        self._listeners: list[PacketCallback] = []
        self._state_listeners: list[StateCallback] = []
        self._closed = False

    # ------------------------------------------------------------------ to implement

    @abstractmethod
    def _transmit(self, data: bytes) -> None:
        """Send one encoded message; raise LinkError when the transport cannot."""

    @abstractmethod
    def _release(self) -> None:
        """Free transport resources on close."""

    # ------------------------------------------------------------------ public

    def next_seq(self) -> int:
        """A 16-bit seq not used by an outstanding request (wraps around)."""
        with self._lock:
            for _ in range(SEQ_MODULO):
                self._seq = (self._seq + 1) % SEQ_MODULO
                if self._seq not in self._waiters:
                    return self._seq
        raise LinkError(f"{self.name}: every sequence number is in use")

    def send(self, msg: m.Message, seq: int | None = None) -> int:
        """Send a command without waiting; returns its seq."""
        if self._closed:
            raise LinkError(f"channel to {self.name} is closed")
        seq = self.next_seq() if seq is None else seq % SEQ_MODULO
        self._transmit(m.encode(msg, seq))
        self.counters["sent"] += 1
        return seq

    def request(self, msg: m.Message, timeout: float = REQUEST_TIMEOUT_S, retries: int = REQUEST_RETRIES) -> m.Packet:
        """Send and wait for the reply; DeviceError on an ERROR reply, LinkError when none comes."""
        if self._closed:
            raise LinkError(f"channel to {self.name} is closed")
        accepts = REPLY_TYPES.get(msg.TYPE, frozenset()) | {MsgType.ERROR}
        waiter = _Waiter(frozenset(accepts))
        seq = self.next_seq()
        with self._lock:
            self._waiters[seq] = waiter
        data = m.encode(msg, seq)
        try:
            for attempt in range(retries + 1):
                if attempt:
                    self.counters["retries"] += 1
                    log.info("%s: no reply to %s seq %d, retry %d/%d", self.name, msg.TYPE.name, seq, attempt,
                             retries)
                self._transmit(data)
                self.counters["sent"] += 1
                if waiter.event.wait(timeout):
                    break
            else:
                self.counters["timeouts"] += 1
                raise LinkError(f"no reply from {self.name} to {msg.TYPE.name} after {retries + 1} attempts "
                                f"of {timeout:g} s")
        finally:
            with self._lock:
                self._waiters.pop(seq, None)
        if waiter.failure is not None:
            raise LinkError(f"{self.name}: {waiter.failure}")
        packet = waiter.packet
        assert packet is not None
        if isinstance(packet.msg, m.Error):
            code = packet.msg.code
            try:
                label = f"{ErrorCode(code).name} ({ERROR_TEXT.get(ErrorCode(code), '')})"
            except ValueError:
                label = f"error {code}"
            detail = f": {packet.msg.message}" if packet.msg.message else ""
            raise DeviceError(f"{self.name} refused {msg.TYPE.name}: {label}{detail}", code=code)
        return packet

    def on_packet(self, callback: PacketCallback) -> None:
        """`callback(packet)` for every decoded packet (replies included), on the transport's thread."""
        with self._lock:
            self._listeners.append(callback)

    def remove_packet_listener(self, callback: PacketCallback) -> None:
        with self._lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def on_state(self, callback: StateCallback) -> None:
        """`callback(up, reason)` when the underlying link comes up or goes down."""
        with self._lock:
            self._state_listeners.append(callback)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._fail_waiters("channel closed")
        self._release()

    def __enter__(self) -> DeviceChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ receiving side

    def _receive(self, data: bytes, may_reply: bool = True) -> None:
        """Decode one message from the transport and route it; never raises."""
        try:
            packet = m.decode(data)
        except ProtocolError as exc:
            self.counters[f"bad_{drop_reason(exc.code)}"] += 1
            log.warning("%s: dropped a message: %s", self.name, exc)
            return
        except Exception:
            self.counters["bad_internal"] += 1
            log.exception("%s: decoder failed", self.name)
            return
        self.counters["received"] += 1
        if may_reply:
            with self._lock:
                waiter = self._waiters.get(packet.seq)
            if waiter is not None and packet.msg.TYPE in waiter.accepts and not waiter.event.is_set():
                waiter.packet = packet
                waiter.event.set()
        with self._lock:
            listeners = list(self._listeners)
        for callback in listeners:
            try:
                callback(packet)
            except Exception:
                self.counters["listener_errors"] += 1
                log.exception("%s: packet listener failed", self.name)

    def _link_state(self, up: bool, reason: str) -> None:
        if not up:
            self._fail_waiters(reason)
        with self._lock:
            listeners = list(self._state_listeners)
        for callback in listeners:
            try:
                callback(up, reason)
            except Exception:
                log.exception("%s: state listener failed", self.name)

    def _fail_waiters(self, reason: str) -> None:
        with self._lock:
            waiters = list(self._waiters.values())
        for waiter in waiters:
            if not waiter.event.is_set():
                waiter.failure = reason
                waiter.event.set()


class SerialChannel(DeviceChannel):
    """A device on a serial line; the channel owns its SerialLink and closes it."""

    def __init__(self, link: SerialLink) -> None:
        super().__init__()
        self.link = link
        self.name = link.url
        link.on_message(self._receive)
        link.on_state(self._link_state)
        if not link.is_open:
            link.open()

    @classmethod
    def open(cls, url: str, baud: int | None = None) -> SerialChannel:
        return cls(SerialLink(url, baud) if baud else SerialLink(url))

    def _transmit(self, data: bytes) -> None:
        self.link.send(data)

    def _release(self) -> None:
        self.link.close()


class MqttChannel(DeviceChannel):
    """A device reached through the broker: commands to `.../cmd`, replies from `.../reply`.

    The connection is shared (one per broker); closing the channel only drops its subscriptions.
    """

    # Commands must arrive (PROTOCOL.md 2.2): QoS 1, duplicates dropped by the device by seq.
    COMMAND_QOS = 1

    def __init__(self, connection: MqttConnection, site: str, device_id: str) -> None:
        if not topics.valid_id(site) or not topics.valid_id(device_id):
            raise LinkError(f"invalid site or device id {site!r}/{device_id!r}: expected [A-Za-z0-9_.-]{{1,64}}")
        super().__init__()
        self.connection = connection
        self.site = site
        self.device_id = device_id
        self.name = device_id
        self._cmd_topic = topics.device_topic(site, device_id, topics.CMD)
        self._subs = [
            (topics.device_topic(site, device_id, topics.REPLY), self._on_reply),
            (topics.device_topic(site, device_id, topics.TELEMETRY), self._on_other),
            (topics.device_topic(site, device_id, topics.STATUS), self._on_other),
        ]
        for topic, handler in self._subs:
            connection.subscribe(topic, handler)
        connection.on_state(self._link_state)

    def _on_reply(self, topic: str, payload: bytes) -> None:
        self._receive(payload, may_reply=True)

    def _on_other(self, topic: str, payload: bytes) -> None:
        self._receive(payload, may_reply=False)

    def _transmit(self, data: bytes) -> None:
        self.connection.publish(self._cmd_topic, data, qos=self.COMMAND_QOS)

    def _release(self) -> None:
        for topic, handler in self._subs:
            self.connection.unsubscribe(topic, handler)
        self.connection.remove_state_listener(self._link_state)
