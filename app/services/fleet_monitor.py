"""FleetMonitor: every device's presence, model and latest score, from the broker alone.

Presence comes from the retained HELLO on `.../status` (PROTOCOL.md 2.2) and the last will that
replaces it when a device vanishes, and from the HELLO heartbeat every device publishes there. A
broker that does not send retained messages to wildcard subscriptions (RabbitMQ) still sends them to
exact ones: a device the memory remembers is watched on its exact status topic, and one whose
telemetry names it before its HELLO came is asked GET_INFO on its exact topics (ExactLookup).
`settle()` tells when the broker has sent what it holds (the acknowledgement of a later subscription).
A device silent for `STALE_AFTER_S` is shown offline too (its
will may be delayed by the broker's keep-alive). A device exists once it has said HELLO: telemetry
from an id that never did is counted and dropped (no ghost devices), and a HELLO's values that size
work are clamped (`Hello.clamped`). Telemetry updates score and last-seen. An offline device keeps
its last known model and last-seen time; with a `FleetMemory` also across runs (its will, fixed at
connect, carries neither). Streams are subscribed and leased only while someone listens. Bad
messages are counted per reason, never raised.
Listeners run on the transport thread (MQTT network thread or serial reader): keep them quick.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from app.domain.errors import LinkError, ProtocolError
from app.protocol import messages as m
from app.protocol import topics
from app.protocol.codes import HELLO_INTERVAL_S, DeviceState, StateLabel, TelemetryFlags, drop_reason
from app.services.channel import SerialChannel
from app.services.exact_lookup import ExactLookup
from app.services.fleet_memory import FIELDS as MEMORY_FIELDS
from app.services.fleet_memory import FleetMemory
from app.transport.callbacks import call_each
from app.transport.mqtt_link import MqttConnection

M = TypeVar("M", bound=m.Message)

log = logging.getLogger(__name__)

# Three missed heartbeats: one lost HELLO is noise, three mean the device is gone.
STALE_AFTER_S = 3 * HELLO_INTERVAL_S
# How often the housekeeping thread looks for stale devices and renews stream leases.
HOUSEKEEPING_S = 1.0
# Stream lease asked of a device; renewed every STREAM_RENEW_S so a lost renewal costs nothing.
STREAM_LEASE_S = 30
STREAM_RENEW_S = 10.0
# Command seqs of every monitor in this process come from one counter with a random start: a device
# drops a command whose bytes repeat within its duplicate window, so a monitor restarted (or a second
# one) must never resend the same seq as the last one.
_COMMAND_SEQ = itertools.count(random.randrange(1 << 16))
# Telemetry is QoS 0 on the wire (a lost one is superseded); subscribing at 0 avoids broker acks.
TELEMETRY_QOS = 0
STREAM_QOS = 0
# Where `settle()` subscribes its marker: a status topic of a device id that never exists.
MARKER_SITE = "tinymlops-marker"
# Waiting for the broker to acknowledge the subscriptions (one round trip on a LAN).
SETTLE_TIMEOUT_S = 10.0
# After the marker: anything the broker still sends for the subscriptions arrives within this.
SETTLE_QUIET_S = 0.1
# How often the last known values are written to the fleet memory (and once more on close): often
# enough that a crash loses little, rarely enough that 1 Hz telemetry does not rewrite a file each second.
MEMORY_SAVE_S = 10.0

# TELEMETRY flag bits as plain ints for the per-message path.
_ALARM, _TRIAL, _NO_MODEL = int(TelemetryFlags.ALARM), int(TelemetryFlags.TRIAL), int(TelemetryFlags.NO_MODEL)

Listener = Callable[[str, "DeviceRecord"], None]
StreamListener = Callable[[str, m.Stream], None]


@dataclass
class DeviceRecord:
    """What the operator sees of one device; `state` is offline/online/streaming/updating."""

    device_id: str
    site: str = ""
    location: str = ""
    transport: str = "mqtt"
    state: StateLabel = StateLabel.ONLINE
    profile: str = ""
    firmware: str = ""
    model_name: str = ""
    model_version: int = 0
    trial: bool = False
    prev_version: int = 0
    score: float | None = None
    threshold: float | None = None
    alarm: bool = False
    shaft_hz: float | None = None
    last_seen: float = 0.0
    uptime_s: int = 0
    hello: m.Hello | None = None
    # the last TELEMETRY's feature vector (PROTOCOL.md 8): the history's listener stores it, the fleet
    # table estimates velocity from it
    features: tuple[float, ...] = dataclasses.field(default=(), repr=False)

    @property
    def online(self) -> bool:
        return self.state != StateLabel.OFFLINE

    def snapshot(self) -> DeviceRecord:
        """A shallow copy, as `dataclasses.replace(self)` gives, at a small part of its cost: the
        per-message path hands one to the listeners while the live record keeps changing."""
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        return copy

    def as_dict(self, with_hello: bool = True) -> dict:
        """The record for JSON: every field is a plain value but `hello` (described) and `features` (left
        out: 36 floats a device the history keeps). A shallow walk, not dataclasses.asdict, whose deep
        copies took 2 of the 4 s `fleet list --json` spent on 10,000 devices."""
        out = {name: getattr(self, name) for name in _RECORD_FIELDS}
        if with_hello:
            out["hello"] = self.hello.describe() if self.hello else None
        return out


_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(DeviceRecord) if f.name not in ("features", "hello"))


class FleetMonitor:
    """Watches a broker (and attached serial devices); see the module docstring. Thread-safe."""

    def __init__(self, connection: MqttConnection | None, stale_after_s: float = STALE_AFTER_S,
                 memory: FleetMemory | None = None) -> None:
        self.connection = connection
        self.stale_after_s = stale_after_s
        self.memory = memory
        self._memory_saved = time.monotonic()
        self.counters: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._records: dict[str, DeviceRecord] = {}
        self._listeners: list[Listener] = []
        self._stream_listeners: dict[str, list[StreamListener]] = {}
        self._stream_renewed: dict[str, float] = {}
        self._stream_subscribed: set[str] = set()  # devices whose stream topic we subscribed
        self._serial: dict[str, SerialChannel] = {}
        self._stop = threading.Event()
        self._subs: list[tuple[str, Callable[[str, bytes], None], int]] = []
        self.lookups: ExactLookup | None = None
        if connection is not None:
            self._subs = [
                (topics.all_status(), self._on_status, 1),
                (f"{topics.ROOT}/+/+/{topics.TELEMETRY}", self._on_telemetry, TELEMETRY_QOS),
            ]
            for topic, handler, qos in self._subs:
                connection.subscribe(topic, handler, qos=qos)
            # devices found on their exact topics (brokers without retained delivery to wildcards)
            self.lookups = ExactLookup(connection, self._on_status, self._on_asked_hello,
                                       lambda: next(_COMMAND_SEQ) & 0xFFFF)
            for device_id, entry in (memory.known() if memory is not None else {}).items():
                self.lookups.watch(entry.get("site", ""), device_id)
        self._thread = threading.Thread(target=self._housekeeping, name="fleet-monitor", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ queries

    def devices(self) -> list[DeviceRecord]:
        """Snapshots of every known device, sorted by id."""
        with self._lock:
            return [dataclasses.replace(r) for _, r in sorted(self._records.items())]

    def get(self, device_id: str) -> DeviceRecord | None:
        with self._lock:
            record = self._records.get(device_id)
            return dataclasses.replace(record) if record else None

    def hellos(self, device_ids: list[str]) -> dict[str, m.Hello]:
        """The latest HELLO of each of `device_ids` that is online now: what a deployment would ask
        the broker for again (app.deploy.api.deploy's `hellos`, confirm's and rollback's `known`)."""
        with self._lock:
            records = [self._records.get(d) for d in device_ids]
        return {r.device_id: r.hello for r in records if r is not None and r.hello is not None and r.online}

    def add_listener(self, callback: Listener) -> None:
        """`callback(event, record)`; events: added, changed, telemetry, offline, removed."""
        with self._lock:
            self._listeners = [*self._listeners, callback]

    def remove_listener(self, callback: Listener) -> None:
        with self._lock:
            self._listeners = [c for c in self._listeners if c is not callback]

    def close(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(HOUSEKEEPING_S * 3)
        for device_id in list(self._stream_listeners):
            self._stop_stream(device_id)
        self._stream_listeners.clear()
        if self.connection is not None:
            for topic, handler, _ in self._subs:
                self.connection.unsubscribe(topic, handler)
        if self.lookups is not None:
            self.lookups.close()
        if self.memory is not None:
            self.memory.save()

    def __enter__(self) -> FleetMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def settle(self, timeout: float = SETTLE_TIMEOUT_S) -> float:
        """Return once the broker has sent what it holds for our subscriptions (retained statuses,
        wills); returns the seconds it took. The marker is the acknowledgement of one more
        subscription made after them: a broker answers a client's packets in order, so the retained
        messages of the earlier subscriptions come before it (and it needs no right to publish, only
        an answer: a refused subscription is acknowledged too). A short quiet period covers a broker
        that sends retained messages from another task (amqtt)."""
        if self.connection is None:
            return 0.0
        started = time.monotonic()
        marker = topics.device_topic(MARKER_SITE, f"m-{random.getrandbits(48):012x}", topics.STATUS)
        self.connection.subscribe(marker, self._on_status)
        try:
            self.connection.wait_subscribed(timeout)
            self._stop.wait(SETTLE_QUIET_S)  # a quiet period after the event, not a synchronisation
        finally:
            self.connection.unsubscribe(marker, self._on_status)
        return time.monotonic() - started

    def _on_asked_hello(self, site: str, hello: m.Hello) -> None:
        """A device's HELLO in answer to our GET_INFO on its exact topics (see ExactLookup)."""
        self.counters["status"] += 1
        self._apply_hello(hello, site, "mqtt")

    # ------------------------------------------------------------------ MQTT ingest (network thread)

    def _bad(self, reason: str, detail: str) -> None:
        self.counters[f"bad_{reason}"] += 1
        log.debug("dropped a message: %s", detail)

    def _decode(self, payload: bytes, topic: str) -> m.Packet | None:
        try:
            return m.decode(payload)
        except ProtocolError as exc:
            self._bad(drop_reason(exc.code), f"{topic}: {exc}")
        except Exception as exc:  # the codec should only raise ProtocolError; never let it escape
            self._bad("internal", f"{topic}: {exc!r}")
        return None

    def _device_topic(self, topic: str) -> tuple[str, str, str] | None:
        """(site, device id, leaf) of a device topic, or None after counting it as bad."""
        parsed = topics.parse_device_topic(topic)
        if parsed is None:
            self._bad("topic", topic)
        return parsed

    def _expect(self, payload: bytes, topic: str, kind: type[M], where: str) -> M | None:
        """The message of `kind` in `payload`, or None after counting why it was dropped."""
        packet = self._decode(payload, topic)
        if packet is None:
            return None
        if not isinstance(packet.msg, kind):
            self._bad("wrong_type", f"{topic}: {packet.msg.TYPE.name} on a {where} topic")
            return None
        return packet.msg

    def _on_status(self, topic: str, payload: bytes) -> None:
        parsed = self._device_topic(topic)
        if parsed is None:
            return
        site, device_id, _ = parsed
        if not payload:  # a cleared retained status: the device was decommissioned
            self._remove(device_id)
            return
        hello = self._expect(payload, topic, m.Hello, "status")
        if hello is None:
            return
        if hello.device_id != device_id:
            self._bad("id_mismatch", f"{topic}: HELLO from {hello.device_id!r}")
            return
        self.counters["status"] += 1
        self._apply_hello(hello, site, "mqtt")

    def _on_telemetry(self, topic: str, payload: bytes) -> None:
        parsed = self._device_topic(topic)
        telemetry = self._expect(payload, topic, m.Telemetry, "telemetry") if parsed else None
        if telemetry is not None:
            self._apply_telemetry(telemetry, parsed[1], parsed[0], "mqtt")

    def _on_stream(self, topic: str, payload: bytes) -> None:
        parsed = self._device_topic(topic)
        stream = self._expect(payload, topic, m.Stream, "stream") if parsed else None
        if stream is not None:
            self.counters["stream"] += 1
            self._deliver_stream(parsed[1], stream)

    # ------------------------------------------------------------------ record updates

    def _apply_hello(self, hello: m.Hello, site: str, transport: str) -> None:
        now = time.time()
        hello = hello.clamped()
        offline = hello.state == DeviceState.OFFLINE
        remembered = self.memory.get(hello.device_id) if offline and self.memory is not None else None
        with self._lock:
            record = self._records.get(hello.device_id)
            event = "added" if record is None else "changed"
            if record is None:
                record = DeviceRecord(device_id=hello.device_id)
                self._records[hello.device_id] = record
            was_online = record.online and event == "changed"
            if offline and event == "changed":
                # The will was composed when the device connected: keep what we know, mark it gone.
                record.state = StateLabel.OFFLINE
                record.hello = hello
            elif offline and remembered:
                # First heard of through its will: what we knew when it was last heard beats the will
                # (the topic it came on still says where it is now)
                for key, value in remembered.items():
                    setattr(record, key, value)
                record.site = site
                record.transport = transport
                record.state = StateLabel.OFFLINE
                record.uptime_s = hello.uptime_s
                record.hello = hello
            else:
                record.site = site
                record.location = hello.location
                record.transport = transport
                record.state = DeviceState.from_wire(hello.state).label
                record.profile = hello.profile
                record.firmware = hello.firmware
                record.model_name = hello.model_name
                record.model_version = hello.model_version
                record.trial = bool(hello.trial)
                record.prev_version = hello.prev_version
                record.uptime_s = hello.uptime_s
                record.hello = hello
                if not offline:
                    record.last_seen = now
            snapshot = dataclasses.replace(record)
        if not offline:
            self._remember(snapshot)
        if offline and was_online:
            event = "offline"
        self._emit(event, snapshot)
        if not offline and not was_online and hello.device_id in self._stream_listeners:
            # a stream was asked for before the device was known (or while it was away): start it now
            self._start_stream(hello.device_id)

    def _apply_telemetry(self, tel: m.Telemetry, device_id: str, site: str, transport: str) -> None:
        with self._lock:
            record = self._records.get(device_id)
            if record is None:
                # no HELLO yet (or ever): a device is what said HELLO, not any id on a telemetry topic
                self.counters["bad_unknown_device"] += 1
                log.debug("dropped telemetry from %s/%s: no HELLO from it", site or transport, device_id)
                if self.lookups is not None and transport == "mqtt":  # online yet unknown: ask it who it is
                    self.lookups.ask(site, device_id)
                return
            self.counters["telemetry"] += 1
            came_back = record.state == StateLabel.OFFLINE
            if came_back:
                record.state = StateLabel.ONLINE
            flags = tel.flags  # a plain int: IntFlag arithmetic costs more than the rest of this update
            record.score = None if flags & _NO_MODEL else tel.score
            record.threshold = tel.threshold
            record.alarm = bool(flags & _ALARM)
            record.trial = bool(flags & _TRIAL)
            record.shaft_hz = tel.shaft_hz or None
            record.model_version = tel.model_version
            record.uptime_s = tel.uptime_ms // 1000
            record.features = tel.features
            record.last_seen = time.time()
            listeners = self._listeners
            snapshot = record.snapshot() if listeners or self.memory is not None else record
        self._remember(snapshot)
        if came_back:
            self._emit("changed", snapshot)
        self._emit("telemetry", snapshot)

    def _remove(self, device_id: str) -> None:
        with self._lock:
            record = self._records.pop(device_id, None)
        if record is not None:
            if self.memory is not None:
                self.memory.forget(device_id)
            self._emit("removed", record)

    def _remember(self, record: DeviceRecord) -> None:
        if self.memory is not None:
            self.memory.remember(record.device_id, {key: getattr(record, key) for key in MEMORY_FIELDS})

    def _emit(self, event: str, record: DeviceRecord) -> None:
        listeners = self._listeners  # replaced, never mutated in place, under the lock
        call_each(listeners, (event, record), log, "fleet listener failed on %s %s", event, record.device_id,
                  errors=self.counters)

    # ------------------------------------------------------------------ housekeeping thread

    def _housekeeping(self) -> None:
        while not self._stop.wait(HOUSEKEEPING_S):
            try:
                self._mark_stale()
                self._renew_streams()
                if self.lookups is not None:
                    self.lookups.expire()
                if self.memory is not None and time.monotonic() - self._memory_saved >= MEMORY_SAVE_S:
                    self._memory_saved = time.monotonic()
                    self.memory.save()
            except Exception:  # never let the monitor's only thread die
                self.counters["housekeeping_errors"] += 1
                log.exception("fleet monitor housekeeping failed")

    def _mark_stale(self) -> None:
        cutoff = time.time() - self.stale_after_s
        gone: list[DeviceRecord] = []
        with self._lock:
            for record in self._records.values():
                if record.online and record.last_seen < cutoff:
                    record.state = StateLabel.OFFLINE
                    gone.append(dataclasses.replace(record))
        for record in gone:
            log.info("device %s silent for %.0f s: shown offline", record.device_id, self.stale_after_s)
            self._emit("offline", record)

    # ------------------------------------------------------------------ streams

    def add_stream_listener(self, device_id: str, callback: StreamListener) -> None:
        """`callback(device_id, Stream)` for each raw window; the first listener starts the stream."""
        with self._lock:
            listeners = self._stream_listeners.get(device_id)
            first = not listeners
            self._stream_listeners[device_id] = [*(listeners or []), callback]
        if first:
            self._start_stream(device_id)

    def remove_stream_listener(self, device_id: str, callback: StreamListener) -> None:
        """Drop a listener; the last one stops the device's stream."""
        with self._lock:
            listeners = [c for c in self._stream_listeners.get(device_id, []) if c is not callback]
            if listeners:
                self._stream_listeners[device_id] = listeners
                return
            had = self._stream_listeners.pop(device_id, None) is not None
        if had:
            self._stop_stream(device_id)

    def _deliver_stream(self, device_id: str, stream: m.Stream) -> None:
        call_each(self._stream_listeners.get(device_id, ()), (device_id, stream), log,
                  "stream listener for %s failed", device_id, errors=self.counters)

    def _stream_topic(self, device_id: str) -> str | None:
        record = self._records.get(device_id)
        if record is None or not record.site:
            return None
        return topics.device_topic(record.site, device_id, topics.STREAM)

    def _command(self, device_id: str, msg: m.Message) -> None:
        """Fire one command at a device by whichever transport it is on; failures are logged."""
        try:
            channel = self._serial.get(device_id)
            if channel is not None:
                channel.send(msg)
                return
            record = self._records.get(device_id)
            if self.connection is None or record is None or not record.site:
                log.warning("cannot command %s: unknown device", device_id)
                return
            seq = next(_COMMAND_SEQ) & 0xFFFF
            self.connection.publish(topics.device_topic(record.site, device_id, topics.CMD), m.encode(msg, seq),
                                    qos=1)
        except (LinkError, ProtocolError) as exc:
            self.counters["command_errors"] += 1
            log.warning("could not send %s to %s: %s", msg.TYPE.name, device_id, exc)

    def _start_stream(self, device_id: str) -> None:
        if device_id not in self._serial and self.connection is not None:
            with self._lock:  # the network thread (a HELLO) and the caller may both get here
                topic = None if device_id in self._stream_subscribed else self._stream_topic(device_id)
                if topic is not None:
                    self._stream_subscribed.add(device_id)
            if topic is not None:
                self.connection.subscribe(topic, self._on_stream, qos=STREAM_QOS)
        self._command(device_id, m.StreamStart(lease_s=STREAM_LEASE_S))
        self._stream_renewed[device_id] = time.monotonic()

    def _stop_stream(self, device_id: str) -> None:
        self._command(device_id, m.StreamStop())
        self._stream_renewed.pop(device_id, None)
        if self.connection is not None:
            with self._lock:
                topic = self._stream_topic(device_id) if device_id in self._stream_subscribed else None
                self._stream_subscribed.discard(device_id)
            if topic is not None:
                self.connection.unsubscribe(topic, self._on_stream)

    def _renew_streams(self) -> None:
        now = time.monotonic()
        for device_id in list(self._stream_listeners):
            if now - self._stream_renewed.get(device_id, 0.0) >= STREAM_RENEW_S:
                self._command(device_id, m.StreamStart(lease_s=STREAM_LEASE_S))
                self._stream_renewed[device_id] = now

    # ------------------------------------------------------------------ serial devices

    def attach_serial(self, channel: SerialChannel) -> None:
        """Show a device on a serial line in the fleet; it is asked for its HELLO at once."""
        known: dict[str, str] = {}

        def on_packet(packet: m.Packet) -> None:
            msg = packet.msg
            if isinstance(msg, m.Hello):
                if not topics.valid_id(msg.device_id):
                    self._bad("id", f"{channel.name}: invalid device id {msg.device_id!r}")
                    return
                known["id"] = msg.device_id
                with self._lock:
                    self._serial[msg.device_id] = channel
                self.counters["status"] += 1
                self._apply_hello(msg, msg.site, "serial")
            elif isinstance(msg, m.Telemetry) and "id" in known:
                self._apply_telemetry(msg, known["id"], "", "serial")
            elif isinstance(msg, m.Stream) and "id" in known:
                self.counters["stream"] += 1
                self._deliver_stream(known["id"], msg)

        def on_state(up: bool, reason: str) -> None:
            if up:  # the port was reopened (cable back in): ask who is there now
                try:
                    channel.send(m.GetInfo())
                except LinkError as exc:
                    log.warning("could not ask %s for its HELLO: %s", channel.name, exc)
                return
            device_id = known.get("id")
            if device_id is None:
                return
            with self._lock:
                record = self._records.get(device_id)
                if record is None or not record.online:
                    return
                record.state = StateLabel.OFFLINE
                snapshot = dataclasses.replace(record)
            self._emit("offline", snapshot)

        channel.on_packet(on_packet)
        channel.on_state(on_state)
        try:
            channel.send(m.GetInfo())
        except LinkError as exc:
            log.warning("could not ask %s for its HELLO: %s", channel.name, exc)

