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
import time
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from app.domain.errors import Cancelled, DeviceError, LinkError, ProtocolError
from app.protocol import messages as m
from app.protocol import topics
from app.protocol.codes import ERROR_TEXT, ErrorCode, MsgType, drop_reason
from app.transport.callbacks import call_each
from app.transport.device_link import DeviceTransport, MqttDeviceLink
from app.transport.mqtt_link import MqttConnection
from app.transport.serial_link import SerialLink

log = logging.getLogger(__name__)

# A device answers most commands within milliseconds; a slow link or a busy Python device within 2 s.
REQUEST_TIMEOUT_S = 2.0
# Resends (same seq) before giving up: covers a frame lost to line noise, not a dead device.
REQUEST_RETRIES = 2
# Sequence numbers are 16 bits on the wire.
SEQ_MODULO = 1 << 16
# How often a request waiting for its reply looks at its cancel event: an operator's cancel is
# felt at once, and a waiting thread wakes at most this often.
CANCEL_POLL_S = 0.1

# The reply type of a request: channel.request(GetInfo()) -> Packet[Hello] (m.Request's parameter).
ReplyT = TypeVar("ReplyT", bound=m.Message)
PacketCallback = Callable[[m.Packet], None]
StateCallback = Callable[[bool, str], None]


class _Waiter:
    __slots__ = ("accepts", "event", "failure", "packet", "resend")

    def __init__(self, accepts: frozenset[MsgType]) -> None:
        self.accepts = accepts
        self.event = threading.Event()
        self.packet: m.Packet | None = None
        self.failure: str | None = None
        self.resend = False  # the link came back: send the command again now (its reply may be lost)


class DeviceChannel:
    """Request/reply and listeners on top of a DeviceTransport (a serial link or a device's MQTT
    topics); the channel owns the transport and closes it."""

    # Whether a pending request fails as soon as the link goes down. A serial port that vanished does
    # not come back by itself; an MQTT connection does (paho reconnects and re-sends queued QoS 1
    # commands), so its requests ride out the reconnect within their own deadline.
    FAIL_PENDING_ON_DROP = True

    def __init__(self, transport: DeviceTransport, name: str = "device") -> None:
        self.transport = transport
        self.name = name
        self.counters: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._seq = random.randrange(SEQ_MODULO)  # two operators on one device rarely collide
        self._waiters: dict[int, _Waiter] = {}
        self._listeners: list[PacketCallback] = []
        self._state_listeners: list[StateCallback] = []
        self._closed = False
        transport.on_message(self._receive)
        transport.on_state(self._link_state)

    def _transmit(self, data: bytes) -> int | None:
        """Send one encoded message; returns the bytes it cost on the wire when the transport says
        (serial framing), LinkError when the transport cannot."""
        return self.transport.send(data)

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
        return self.send_counted(msg, seq)[0]

    def send_counted(self, msg: m.Message, seq: int | None = None) -> tuple[int, int]:
        """Send a command without waiting; returns its seq and the bytes it cost on the wire (framing
        included), so a caller counting traffic need not encode or frame it again."""
        if self._closed:
            raise LinkError(f"channel to {self.name} is closed")
        seq = self.next_seq() if seq is None else seq % SEQ_MODULO
        data = m.encode(msg, seq)
        wire = self._transmit(data)
        self.counters["sent"] += 1
        return seq, len(data) if wire is None else wire

    def request(self, msg: m.Request[ReplyT], timeout: float = REQUEST_TIMEOUT_S,
                retries: int = REQUEST_RETRIES, cancel: threading.Event | None = None) -> m.Packet[ReplyT]:
        """Send and wait for the reply, one of `msg.REPLY` (typed: no isinstance needed); DeviceError
        on an ERROR reply, LinkError when none comes, Cancelled as soon as `cancel` is set while
        waiting (the command may still take effect)."""
        if self._closed:
            raise LinkError(f"channel to {self.name} is closed")
        # matching the type as well as the seq keeps an unsolicited HELLO or XFER_STATUS from being
        # taken for a reply; a message that is no command (sent to see the device refuse it) can only
        # be answered by ERROR
        replies = msg.REPLY if isinstance(msg, m.Request) else ()
        accepts = {reply.TYPE for reply in replies} | {MsgType.ERROR}
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
                if self._wait_reply(waiter, data, timeout, resend=retries > 0, cancel=cancel):
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

    def _wait_reply(self, waiter: _Waiter, data: bytes, timeout: float, resend: bool,
                    cancel: threading.Event | None = None) -> bool:
        """Wait up to `timeout` for the reply (or a failure); raises Cancelled when `cancel` is set
        first. When the link comes back meanwhile, send the command again at once: a reply the device
        sent while we were away is lost for good. Not when the caller asked for no retries (`resend`
        False: ROLLBACK, XFER_COMMIT must not run twice should the device's duplicate filter have
        forgotten the first copy)."""
        deadline = time.monotonic() + timeout
        while True:
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled while waiting for the device's reply")
            left = deadline - time.monotonic()
            if left <= 0:
                return waiter.packet is not None or waiter.failure is not None
            if not waiter.event.wait(left if cancel is None else min(left, CANCEL_POLL_S)):
                continue
            with self._lock:
                again, waiter.resend = waiter.resend, False
                if not again or waiter.packet is not None or waiter.failure is not None:
                    return True
                waiter.event.clear()
            if waiter.packet is not None or waiter.failure is not None:
                return True  # the reply came between our check and the clear: its wake-up was cleared
            if not resend:
                continue
            self.counters["resent_after_reconnect"] += 1
            try:
                self._transmit(data)
            except LinkError as exc:  # down again already: the next reconnect or attempt sends it
                log.info("%s: re-sending after a reconnect failed: %s", self.name, exc)

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

    def remove_state_listener(self, callback: StateCallback) -> None:
        with self._lock:
            if callback in self._state_listeners:
                self._state_listeners.remove(callback)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._fail_waiters("channel closed")
        self.transport.close()

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
            if waiter is not None and packet.msg.TYPE in waiter.accepts and waiter.packet is None:
                waiter.packet = packet
                waiter.event.set()
        with self._lock:
            listeners = list(self._listeners)
        call_each(listeners, (packet,), log, "%s: packet listener failed", self.name, errors=self.counters)

    def _link_state(self, up: bool, reason: str) -> None:
        if not up and self.FAIL_PENDING_ON_DROP:
            self._fail_waiters(reason)
        elif up:
            self._resend_waiters()
        with self._lock:
            listeners = list(self._state_listeners)
        call_each(listeners, (up, reason), log, "%s: state listener failed", self.name)

    def _resend_waiters(self) -> None:
        with self._lock:
            for waiter in self._waiters.values():
                if not waiter.event.is_set():
                    waiter.resend = True
                    waiter.event.set()

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
        super().__init__(link, link.url)
        self.link = link
        if not link.is_open:
            link.open()

    @classmethod
    def open(cls, url: str, baud: int | None = None) -> SerialChannel:
        return cls(SerialLink(url, baud) if baud else SerialLink(url))


class MqttChannel(DeviceChannel):
    """A device reached through the broker (MqttDeviceLink): commands to `.../cmd`, replies from
    `.../reply`, its telemetry and status to the listeners too (never taken for a reply).

    The connection is shared (one per broker); closing the channel only drops its subscriptions.
    """

    FAIL_PENDING_ON_DROP = False  # the connection reconnects by itself: ride it out (issue 11.5)

    def __init__(self, connection: MqttConnection, site: str, device_id: str) -> None:
        if not topics.valid_id(site) or not topics.valid_id(device_id):
            raise LinkError(f"invalid site or device id {site!r}/{device_id!r}: expected [A-Za-z0-9_.-]{{1,64}}")
        link = MqttDeviceLink(connection, site, device_id)
        super().__init__(link, device_id)
        link.on_broadcast(self._on_broadcast)
        self.connection = connection
        self.site = site
        self.device_id = device_id

    def _on_broadcast(self, payload: bytes) -> None:
        self._receive(payload, may_reply=False)
