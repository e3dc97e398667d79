"""A virtual device: the transport-free protocol engine of firmware/PROTOCOL.md.

Bytes in (`handle`, `handle_pull_chunk`), bytes out, plus `tick(now)` for what a device does by
itself (telemetry, stream windows, HELLO heartbeat, trial timeouts). Every output is tagged with
the channel it belongs on (`STATUS`, `REPLY`, `TELEMETRY`, `STREAM`), which the MQTT adapter maps
to topics and the serial adapter ignores. Nothing here raises on bad input: every defect becomes an
ERROR reply with its protocol code. The device keeps two model slots like a real A/B flash layout:
receiving a new image overwrites the inactive slot (the rollback target), never the active one.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from app.domain.errors import ModelError, ProtocolError
from app.domain.profiles import HardwareProfile, get_profile
from app.fleet.model_slot import LoadedModel, Refused, latency, verify
from app.fleet.trust_store import TrustStore
from app.fleet.vibration import MachineSimulator, estimate_shaft_hz
from app.fleet.window_analysis import WindowAnalyzer
from app.ml.features import DEFAULT_SPEC, extract
from app.protocol import messages as m
from app.protocol.codes import (
    DEFAULT_TRIAL_TIMEOUT_S,
    HELLO_INTERVAL_S,
    PROTOCOL_VERSION,
    PULL_STATUS_INTERVAL_S,
    STREAM_LEASE_MAX_S,
    XFER_STALE_S,
    Caps,
    CommitMode,
    DeviceState,
    ErrorCode,
    EventCode,
    FaultMask,
    MsgType,
    TelemetryFlags,
    XferFlags,
)
from app.protocol.framing import crc32
from app.protocol.topics import REPLY, STATUS, STREAM, TELEMETRY, valid_id

log = logging.getLogger(__name__)

FIRMWARE_VERSION = "sim-1.0.0"
CAPS = (Caps.STREAM | Caps.PUSH_XFER | Caps.PULL_XFER | Caps.TRIAL | Caps.BENCHMARK | Caps.FAULT_SIM
        | Caps.SIGNED | Caps.TRUST_ADMIN)
# One telemetry message per this many seconds (PROTOCOL.md: about 1 Hz).
TELEMETRY_PERIOD_S = 1.0
# Samples per STREAM message (PROTOCOL.md 4.3).
STREAM_WINDOW = 256
# STREAM int16 scale: +-16 g full range, like an ADXL345 in full-resolution mode.
STREAM_SCALE_G = 16.0 / 32768.0
# A device not ticked for longer than this (paused process, stopped debugger) does not replay it.
MAX_CATCHUP_S = 2.0
# A command repeated with the same bytes within this window is a QoS-1 duplicate: answer, don't redo.
DUPLICATE_WINDOW_S = 10.0
# How many recent commands the duplicate filter remembers.
DUPLICATE_CACHE_SIZE = 64
# A pull transfer that received no chunk for this long re-fetches (the adapter resubscribes, and the
# broker sends every retained chunk again): a chunk lost or held up in the broker costs seconds, not
# the whole rollout.
PULL_REFETCH_S = 2.0
Outgoing = tuple[str, bytes]
# Commands that need a capability (PROTOCOL.md 4.1); XFER_BEGIN and trial activation go by their fields.
_NEEDS = {MsgType.STREAM_START: Caps.STREAM, MsgType.XFER_CHUNK: Caps.PUSH_XFER, MsgType.BENCHMARK: Caps.BENCHMARK,
          MsgType.SET_FAULT: Caps.FAULT_SIM, MsgType.XFER_SIGN: Caps.SIGNED,
          MsgType.TRUST_ADD: Caps.TRUST_ADMIN, MsgType.REVOKE: Caps.TRUST_ADMIN}

@dataclass
class Slot:
    model: LoadedModel
    role: str  # "active", "previous" (rollback target), "stored" (committed, not activated), "reverted"


@dataclass
class Transfer:
    transfer_id: int
    image_size: int
    chunk_size: int
    sha256: bytes
    model_name: str
    model_version: int
    pull_source: str | None
    started: float
    last_activity: float
    buf: bytearray = field(default_factory=bytearray)
    have: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    last_status: float = 0.0
    last_fetch: float = 0.0  # last chunk received or re-fetch asked, for PULL_REFETCH_S
    pull_round: int = 0  # bumped to make the adapter resubscribe
    signature: bytes | None = None  # the XFER_SIGN block, checked at COMMIT (PROTOCOL.md 6.2)

    @property
    def n_chunks(self) -> int:
        return len(self.have)

    def chunk_len(self, index: int) -> int:
        return min(self.chunk_size, self.image_size - index * self.chunk_size)

    def status(self) -> m.XferStatus:
        bits = np.packbits(self.have, bitorder="little").tobytes()
        return m.XferStatus(self.transfer_id, self.image_size, self.chunk_size, self.n_chunks,
                            int(self.have.sum()), bits)

    @property
    def complete(self) -> bool:
        return bool(self.have.all())


class VirtualDevice:
    """One simulated sensor node: a machine, a feature extractor, two model slots, the protocol."""

    def __init__(self, device_id: str, location: str, profile: str | HardwareProfile, factory_image: bytes,
                 *, seed: int = 0, shaft_hz: float = 24.7, sample_rate: int = DEFAULT_SPEC.sample_rate,
                 fault_mask: int = 0, severity: float = 0.0, firmware: str = FIRMWARE_VERSION,
                 now: float | None = None, full_rate: bool = False, caps: int = int(CAPS),
                 trust: list[bytes] | None = None) -> None:
        if not valid_id(device_id) or not valid_id(location.split("/", 1)[0]):
            raise ValueError(f"device id {device_id!r} and site of {location!r} must match [A-Za-z0-9_.-]{{1,64}}")
        self.device_id = device_id
        self.location = location
        self.profile = get_profile(profile) if isinstance(profile, str) else profile
        self.firmware = firmware
        # what HELLO advertises; a command needing a capability left out is refused (BAD_ARGUMENT)
        # and counted as "uncapable_command", so a test sees a host that ignores the caps
        self.caps = int(caps)
        self.sample_rate = sample_rate
        self.machine = MachineSimulator(seed, sample_rate, shaft_hz)
        self.machine.set_fault(fault_mask, severity)
        # full_rate: the reference tick (every sample generated, shaft lines by sin/cos, the spec's
        # reference feature and shaft code), kept for benchmarks/fleet_tick.py and the tests
        self.full_rate = bool(full_rate)
        self.machine.reference_lines = self.full_rate
        self._analyzer = WindowAnalyzer(DEFAULT_SPEC, sample_rate)
        # raw Ed25519 public keys the device accepts images from (empty: not provisioned)
        self.trust = TrustStore(trust)
        self._lock = threading.RLock()
        try:
            factory = verify(bytes(factory_image), self.profile)
        except Refused as exc:
            raise ModelError(f"factory model refused by {device_id} ({exc.code.name}): {exc}") from exc
        self._slots: list[Slot | None] = [Slot(factory, "active"), None]
        self._active = 0
        self._trial = False
        self._trial_deadline = 0.0
        self._transfer: Transfer | None = None
        self._deploy_started: dict[bytes, float] = {}
        self._seq = 0
        self._recent: OrderedDict[bytes, tuple[float, list[Outgoing]]] = OrderedDict()
        self.counters: dict[str, int] = {}
        self._boot(time.monotonic() if now is None else now)

    # ------------------------------------------------------------------ state shown to the world
    def _boot(self, now: float) -> None:
        self._booted_at = now
        self._generated = 0  # samples generated since boot
        self._window = np.zeros((DEFAULT_SPEC.window, 3), np.float32)
        self._pending_stream = np.zeros((0, 3), np.float32)
        self._window_seq = 0
        self._stream_seq = 0
        self._stream_until = 0.0
        self._next_telemetry = now + TELEMETRY_PERIOD_S
        self._next_hello = now + HELLO_INTERVAL_S
        self._last_hello_key: tuple | None = None
        self.last_score = 0.0

    @property
    def active_model(self) -> LoadedModel | None:
        slot = self._slots[self._active]
        return slot.model if slot else None

    @property
    def previous_model(self) -> LoadedModel | None:
        slot = self._slots[1 - self._active]
        return slot.model if slot and slot.role == "previous" else None

    @property
    def trial(self) -> bool:
        return self._trial

    @property
    def pull_source(self) -> str | None:
        """MQTT topic prefix whose chunks this device wants now (the adapter subscribes to it)."""
        t = self._transfer
        return t.pull_source if t and t.pull_source and not t.complete else None

    @property
    def pull_request(self) -> tuple[str, int] | None:
        """(topic prefix, fetch round): a new round means "subscribe again" (PULL_REFETCH_S)."""
        t = self._transfer
        return (t.pull_source, t.pull_round) if t and t.pull_source and not t.complete else None

    @property
    def site(self) -> str:
        return self.location.split("/", 1)[0]

    def _state(self, now: float) -> DeviceState:
        if self._transfer is not None:
            return DeviceState.UPDATING
        if now < self._stream_until:
            return DeviceState.STREAMING
        return DeviceState.ONLINE

    def hello(self, now: float | None = None, state: DeviceState | None = None) -> m.Hello:
        now = time.monotonic() if now is None else now
        active, prev = self.active_model, self.previous_model
        return m.Hello(
            proto_min=PROTOCOL_VERSION, proto_max=PROTOCOL_VERSION, caps=self.caps,
            state=int(self._state(now) if state is None else state), device_id=self.device_id,
            location=self.location, profile=self.profile.key, firmware=self.firmware,
            model_name=active.image.name if active else "", model_version=active.image.version if active else 0,
            model_sha=active.sha256[:8] if active else b"\0" * 8, prev_version=prev.image.version if prev else 0,
            trial=int(self._trial), slot_size=self.profile.slot_size, free_slot=self.profile.slot_size,
            ram_budget=self.profile.arena_budget, max_chunk=self.profile.max_chunk,
            sample_rate=self.sample_rate, uptime_s=int(max(0.0, now - self._booted_at)),
            fault_mask=int(self.machine.fault_mask), trust_keys=self.trust.size,
        )

    def offline_hello(self) -> bytes:
        """The last-will payload: HELLO with state OFFLINE."""
        return m.encode(self.hello(state=DeviceState.OFFLINE), 0)

    def _hello_key(self, now: float) -> tuple:
        h = self.hello(now)
        return (h.state, h.model_version, h.model_sha, h.prev_version, h.trial, h.fault_mask, h.caps,
                h.free_slot, h.ram_budget, h.max_chunk, h.trust_keys)

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF
        return self._seq

    def _unsolicited(self, channel: str, msg: m.Message) -> Outgoing:
        return channel, m.encode(msg, self._next_seq())

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    # ------------------------------------------------------------------ input
    def handle(self, data: bytes, now: float | None = None) -> list[Outgoing]:
        """Process one encoded command; returns what to send. Never raises."""
        now = time.monotonic() if now is None else now
        with self._lock:
            seq = int.from_bytes(data[2:4], "little") if len(data) >= 4 else 0
            try:
                packet = m.decode(data)
            except ProtocolError as exc:
                self._count("bad_message")
                log.info("%s: rejected message: %s", self.device_id, exc)
                ref = m.peek_type(data) or 0
                return [(REPLY, m.encode(m.Error(ref, int(exc.code), str(exc)), seq))]
            key = bytes(data)
            cached = self._recent.get(key)
            if cached and now - cached[0] < DUPLICATE_WINDOW_S and packet.msg.TYPE != MsgType.XFER_CHUNK:
                self._count("duplicate")
                return list(cached[1])
            try:
                out = self._dispatch(packet, now)
            except Refused as exc:
                out = [(REPLY, m.encode(m.Error(int(packet.msg.TYPE), int(exc.code), str(exc)), packet.seq))]
            except Exception as exc:  # a bug must not kill the device: answer INTERNAL
                log.exception("%s: internal error handling %s", self.device_id, packet.msg.TYPE.name)
                out = [(REPLY, m.encode(m.Error(int(packet.msg.TYPE), int(ErrorCode.INTERNAL),
                                                f"internal error: {exc}"[:255]), packet.seq))]
            self._recent[key] = (now, out)
            while len(self._recent) > DUPLICATE_CACHE_SIZE:
                self._recent.popitem(last=False)
            out += self._status_if_changed(now)
            return out

    def handle_pull_chunk(self, data: bytes, now: float | None = None) -> list[Outgoing]:
        """A chunk fetched from the broker during a pull transfer; answers XFER_STATUS now and then."""
        now = time.monotonic() if now is None else now
        with self._lock:
            t = self._transfer
            if t is None or not t.pull_source or t.complete:
                return []  # late or retained chunks after completion are nothing new
            try:
                msg = m.decode(data).msg
            except ProtocolError as exc:
                self._count("bad_pull_chunk")
                log.info("%s: bad pull chunk: %s", self.device_id, exc)
                return []
            if not isinstance(msg, m.XferChunk):
                return []
            try:
                self._store_chunk(t, msg, now)
                t.last_fetch = now
            except Refused as exc:
                self._count("bad_pull_chunk")
                log.info("%s: pull chunk %d refused: %s", self.device_id, msg.index, exc)
                return []
            if t.complete or now - t.last_status >= PULL_STATUS_INTERVAL_S:
                t.last_status = now
                return [self._unsolicited(REPLY, t.status())]
            return []

    def _check_caps(self, msg: m.Message) -> None:
        """PROTOCOL.md 4.1: a capability bit not set is one the host does not use."""
        need = _NEEDS.get(msg.TYPE, Caps(0))
        if isinstance(msg, m.XferBegin):
            need = Caps.PULL_XFER if msg.flags & XferFlags.PULL else Caps.PUSH_XFER
        elif isinstance(msg, m.XferCommit | m.Activate) and \
                (msg.mode == CommitMode.TRIAL if isinstance(msg, m.XferCommit) else msg.trial):
            need = Caps.TRIAL
        if need and not self.caps & need:
            self._count("uncapable_command")
            raise Refused(ErrorCode.BAD_ARGUMENT, f"{msg.TYPE.name} needs the {need.name} capability this device lacks")

    def _dispatch(self, p: m.Packet, now: float) -> list[Outgoing]:
        msg, seq = p.msg, p.seq
        self._check_caps(msg)

        def reply(r: m.Message) -> list[Outgoing]:
            return [(REPLY, m.encode(r, seq))]

        def ack() -> list[Outgoing]:
            return reply(m.Ack(int(msg.TYPE)))

        match msg:
            case m.GetInfo():
                return reply(self.hello(now))
            case m.StreamStart(lease_s=lease):
                lease = STREAM_LEASE_MAX_S if lease == 0 else min(lease, STREAM_LEASE_MAX_S)
                self._stream_until = now + lease
                return ack()
            case m.StreamStop():
                self._stream_until = 0.0
                self._pending_stream = self._pending_stream[:0]
                return ack()
            case m.XferBegin():
                return reply(self._xfer_begin(msg, now))
            case m.XferChunk():
                t = self._transfer
                if t is None or t.transfer_id != msg.transfer_id:
                    raise Refused(ErrorCode.NO_TRANSFER, f"no transfer with id {msg.transfer_id}")
                self._store_chunk(t, msg, now)
                return ack()
            case m.XferQuery(transfer_id=tid):
                return reply(self._transfer_by_id(tid).status())
            case m.XferAbort(transfer_id=tid):
                self._transfer_by_id(tid)
                self._transfer = None
                return ack()
            case m.XferSign(transfer_id=tid, block=block):
                self._transfer_by_id(tid).signature = bytes(block)
                return ack()
            case m.TrustAdd(public_key=key, auth=auth):
                self.trust.add_key(key, auth)
                # the retained status first: whoever reads it after this reply sees the new store
                return [*self._status_if_changed(now), *reply(self.hello(now))]
            case m.Revoke(model_name=name, model_version=version, auth=auth):
                self.trust.revoke(name, version, auth)
                return ack()
            case m.XferCommit():
                return self._commit(msg, seq, now)
            case m.Activate():
                return self._activate(msg, seq, now)
            case m.Confirm():
                if not self._trial:
                    raise Refused(ErrorCode.NOT_TRIAL)
                self._trial = False
                return reply(self.hello(now))
            case m.Rollback():
                self._rollback(now)
                return reply(self.hello(now))
            case m.Benchmark(count=count):
                active = self.active_model
                if active is None:
                    raise Refused(ErrorCode.NO_MODEL)
                if count == 0:
                    raise Refused(ErrorCode.BAD_ARGUMENT, "benchmark count must be at least 1")
                return reply(latency(active, 0, count))
            case m.SetFault(mask=mask, severity=severity):
                if mask & ~int(sum(FaultMask)) or not math.isfinite(severity) or not 0.0 <= severity <= 1.0:
                    raise Refused(ErrorCode.BAD_ARGUMENT, "fault mask has unknown bits or severity not in 0..1")
                self.machine.set_fault(mask, severity)
                event = m.Event(int(EventCode.FAULT_CHANGED), f"fault mask {mask} severity {severity:.2f}")
                return [*ack(), self._unsolicited(REPLY, event)]
            case m.Reboot():
                return self._reboot(seq, now)
            case _:
                raise Refused(ErrorCode.UNKNOWN_TYPE, f"{msg.TYPE.name} is not a command")

    # ------------------------------------------------------------------ transfers
    def _transfer_by_id(self, tid: int) -> Transfer:
        t = self._transfer
        if t is None or t.transfer_id != tid:
            raise Refused(ErrorCode.NO_TRANSFER, f"no transfer with id {tid}")
        return t

    def _xfer_begin(self, b: m.XferBegin, now: float) -> m.XferStatus:
        if b.chunk_size == 0 or b.chunk_size > self.profile.max_chunk or b.image_size == 0:
            raise Refused(ErrorCode.BAD_ARGUMENT,
                           f"chunk size must be 1..{self.profile.max_chunk} and the image non-empty")
        if b.image_size > self.profile.slot_size:
            raise Refused(ErrorCode.TOO_LARGE, f"image of {b.image_size} bytes exceeds the "
                           f"{self.profile.slot_size}-byte model slot")
        pull = bool(b.flags & XferFlags.PULL)
        if pull and not b.source:
            raise Refused(ErrorCode.BAD_ARGUMENT, "a pull transfer needs a source topic")
        if pull and any(c in b.source for c in "+#"):
            raise Refused(ErrorCode.BAD_ARGUMENT, "source must be a plain topic prefix")
        if self._trial:
            # the inactive slot holds the trial's rollback target: receiving would erase it, and the
            # unconfirmed model would stay active for good (PROTOCOL.md 5.3)
            raise Refused(ErrorCode.BUSY, "a model is on trial: CONFIRM or ROLLBACK it before a new transfer")
        t = self._transfer
        if t is not None and t.sha256 == b.sha256 and t.image_size == b.image_size \
                and t.chunk_size == b.chunk_size:
            t.transfer_id = b.transfer_id  # resume: keep every chunk already held
            t.pull_source = b.source if pull else None
            t.last_activity = now
            self._count("resumed")
            return t.status()
        if t is not None and now - t.last_activity < XFER_STALE_S:
            raise Refused(ErrorCode.BUSY, f"transfer {t.transfer_id} in progress "
                           f"({int(t.have.sum())}/{t.n_chunks} chunks)")
        # A/B flash: the new image overwrites the inactive slot, so the rollback target is gone
        self._slots[1 - self._active] = None
        n_chunks = -(-b.image_size // b.chunk_size)
        self._transfer = Transfer(b.transfer_id, b.image_size, b.chunk_size, bytes(b.sha256), b.model_name,
                                  b.model_version, b.source if pull else None, now, now,
                                  bytearray(b.image_size), np.zeros(n_chunks, bool))
        return self._transfer.status()

    def _store_chunk(self, t: Transfer, c: m.XferChunk, now: float) -> None:
        if crc32(c.data) != c.crc32:
            raise Refused(ErrorCode.CHUNK_CRC, f"chunk {c.index} fails its CRC")
        if c.index >= t.n_chunks or len(c.data) != t.chunk_len(c.index):
            raise Refused(ErrorCode.CHUNK_RANGE, f"chunk {c.index} of {len(c.data)} bytes does not fit "
                           f"a {t.n_chunks}-chunk image")
        start = c.index * t.chunk_size
        t.buf[start:start + len(c.data)] = c.data
        t.have[c.index] = True
        t.last_activity = now

    def _commit(self, c: m.XferCommit, seq: int, now: float) -> list[Outgoing]:
        t = self._transfer_by_id(c.transfer_id)
        if c.mode not in tuple(CommitMode):
            raise Refused(ErrorCode.BAD_ARGUMENT, f"commit mode {c.mode} unknown")
        if not t.complete:
            raise Refused(ErrorCode.INCOMPLETE, f"{int(t.have.sum())} of {t.n_chunks} chunks held")
        raw = bytes(t.buf)
        self._transfer = None  # whatever happens next, this transfer is over
        started = time.perf_counter()
        if hashlib.sha256(raw).digest() != t.sha256:
            raise Refused(ErrorCode.HASH_MISMATCH)
        # the device's view (PROTOCOL.md 4.4): XFER_BEGIN received -> image verified (all chunks, SHA-256);
        # loading is load_us, as on the firmware
        deploy_us = int((max(0.0, now - t.started) + time.perf_counter() - started) * 1e6)
        self.trust.check_image(raw, t.signature)  # before the image is loaded or a slot changes
        model = verify(raw, self.profile)
        inactive = 1 - self._active
        self._slots[inactive] = Slot(model, "stored")
        out: list[Outgoing] = []
        trial = c.mode == CommitMode.TRIAL
        if c.mode != CommitMode.STORE:
            out += self._switch(model, trial, c.trial_timeout_s, now)
        report = latency(model, deploy_us, c.bench_count, trial=trial)
        return [(REPLY, m.encode(report, seq)), *out]

    def _activate(self, a: m.Activate, seq: int, now: float) -> list[Outgoing]:
        if self._transfer is not None and now - self._transfer.last_activity < XFER_STALE_S:
            raise Refused(ErrorCode.BUSY, "a transfer is writing the inactive slot")
        slot = self._slots[1 - self._active]
        if slot is None:
            raise Refused(ErrorCode.NO_MODEL, "the inactive slot holds no model")
        model = verify(slot.model.raw, self.profile)  # re-verify: a slot is not trusted blindly
        self.trust.check_not_revoked(model.image.name, model.image.version)
        self._slots[1 - self._active] = Slot(model, slot.role)
        out = self._switch(model, bool(a.trial), a.trial_timeout_s, now)
        return [(REPLY, m.encode(latency(model, 0, a.bench_count, trial=bool(a.trial)), seq)), *out]

    def _switch(self, model: LoadedModel, trial: bool, timeout_s: int, now: float) -> list[Outgoing]:
        """Atomically make the inactive slot active; the old active becomes the rollback target."""
        old = self._slots[self._active]
        self._active = 1 - self._active
        self._slots[self._active] = Slot(model, "active")
        if old is not None:
            self._slots[1 - self._active] = Slot(old.model, "previous")
        self._trial = trial
        self._trial_deadline = now + (timeout_s or DEFAULT_TRIAL_TIMEOUT_S)
        log.info("%s: activated %s v%d%s", self.device_id, model.image.name, model.image.version,
                 " on trial" if trial else "")
        text = f"{model.image.name} v{model.image.version}{' on trial' if trial else ''}"
        return [self._unsolicited(REPLY, m.Event(int(EventCode.MODEL_ACTIVATED), text))]

    def _rollback(self, now: float) -> None:
        inactive = self._slots[1 - self._active]
        if inactive is None or inactive.role != "previous":
            raise Refused(ErrorCode.NO_PREVIOUS)
        self._switch(inactive.model, False, 0, now)

    def _revert_trial(self, reason: str) -> list[Outgoing]:
        inactive = self._slots[1 - self._active]
        failed = self._slots[self._active]
        self._trial = False
        if inactive is None or failed is None:
            return []
        self._active = 1 - self._active
        self._slots[self._active] = Slot(inactive.model, "active")
        self._slots[1 - self._active] = Slot(failed.model, "reverted")
        text = f"trial of v{failed.model.image.version} reverted to v{inactive.model.image.version}: {reason}"
        log.info("%s: %s", self.device_id, text)
        return [self._unsolicited(REPLY, m.Event(int(EventCode.TRIAL_REVERTED), text))]

    def _reboot(self, seq: int, now: float) -> list[Outgoing]:
        out: list[Outgoing] = [(REPLY, m.encode(self.hello(now), seq))]
        if self._trial:
            out += self._revert_trial("rebooted before CONFIRM")
        # a partially received transfer survives in flash; the RAM-side stream and windows do not
        self._boot(now)
        out.append(self._unsolicited(REPLY, m.Event(int(EventCode.BOOTED), f"{self.firmware} booted")))
        return out

    # ------------------------------------------------------------------ verification and latency
    # ------------------------------------------------------------------ time passing
    def tick(self, now: float | None = None) -> list[Outgoing]:
        """Advance the simulation to `now`: signal, telemetry, stream windows, heartbeat, trial timeout."""
        now = time.monotonic() if now is None else now
        with self._lock:
            out: list[Outgoing] = []
            if self._trial and now >= self._trial_deadline:
                out += self._revert_trial("not confirmed in time")
            self._advance_signal(now, out)
            t = self._transfer
            pulling = t is not None and t.pull_source and not t.complete
            if pulling and now - max(t.last_fetch, t.started) >= PULL_REFETCH_S:
                t.last_fetch = now
                t.pull_round += 1
                self._count("pull_refetch")
                log.info("%s: no pull chunk for %.1f s, fetching again", self.device_id, PULL_REFETCH_S)
            if now >= self._next_telemetry:
                self._next_telemetry = max(self._next_telemetry + TELEMETRY_PERIOD_S, now)
                out.append(self._unsolicited(TELEMETRY, self._telemetry(now)))
            out += self._status_if_changed(now)
            return out

    def _sample_index(self, t: float) -> int:
        """How many samples the sensor has taken since boot at monotonic time t."""
        return int((t - self._booted_at) * self.sample_rate + 1e-6)

    def _advance_signal(self, now: float, out: list[Outgoing]) -> None:
        """Bring the machine to `now`. Samples that can reach neither the stream nor the next
        telemetry window (everything before its last DEFAULT_SPEC.window samples) are skipped, not
        generated: an idle device pays for ~1/3 of the signal, and what it measures is unchanged."""
        due = self._sample_index(now)  # samples the sensor has taken
        self._generated = max(self._generated, due - int(MAX_CATCHUP_S * self.sample_rate))
        n = due - self._generated
        if n <= 0:
            return
        lease_end = self._sample_index(self._stream_until)
        skip = 0
        if not self.full_rate and lease_end <= self._generated:
            # the next window ends at this tick's last sample if telemetry goes out now, else at the
            # telemetry deadline or later
            window_end = due if now >= self._next_telemetry else self._sample_index(self._next_telemetry)
            skip = min(n, max(0, window_end - len(self._window) - self._generated))
            if skip:
                self.machine.skip(skip)
                n -= skip
                self._generated += skip
                self._pending_stream = self._pending_stream[:0]
                if n == 0:
                    return
        self._generated = due
        block = self.machine.generate(n)
        w = len(self._window)
        self._window = np.concatenate([self._window, block])[-w:] if n < w else block[-w:]
        # samples taken before the lease ended stream, even when the tick comes a little later
        leased = min(n, max(0, lease_end - (due - n)))
        if leased:
            self._pending_stream = np.concatenate([self._pending_stream, block[:leased]])
            while len(self._pending_stream) >= STREAM_WINDOW:
                chunk, self._pending_stream = (self._pending_stream[:STREAM_WINDOW],
                                               self._pending_stream[STREAM_WINDOW:])
                samples = np.clip(np.round(chunk / STREAM_SCALE_G), -32768, 32767).astype(np.int16)
                self._stream_seq = (self._stream_seq + 1) & 0xFFFFFFFF
                out.append(self._unsolicited(STREAM, m.Stream(self._stream_seq, self.sample_rate,
                                                              STREAM_SCALE_G, samples)))
        else:
            self._pending_stream = self._pending_stream[:0]

    def _telemetry(self, now: float) -> m.Telemetry:
        if self.full_rate:
            features, shaft_hz = extract(self._window), estimate_shaft_hz(self._window, self.sample_rate)
        else:
            features, shaft_hz = self._analyzer.analyse(self._window)
        model = self.active_model
        flags = TelemetryFlags(0)
        score = threshold = 0.0
        if model is None:
            flags |= TelemetryFlags.NO_MODEL
        else:
            score = model.scorer.score(features)
            threshold = model.image.threshold
            if score > threshold:
                flags |= TelemetryFlags.ALARM
        if self._trial:
            flags |= TelemetryFlags.TRIAL
        self.last_score = score
        self._window_seq = (self._window_seq + 1) & 0xFFFFFFFF
        return m.Telemetry(int((now - self._booted_at) * 1000) & 0xFFFFFFFF, self._window_seq,
                           model.image.version if model else 0, score, threshold, int(flags),
                           shaft_hz, tuple(float(v) for v in features))

    def _status_if_changed(self, now: float) -> list[Outgoing]:
        key = self._hello_key(now)
        if key != self._last_hello_key or now >= self._next_hello:
            self._last_hello_key = key
            self._next_hello = now + HELLO_INTERVAL_S
            return [self._unsolicited(STATUS, self.hello(now))]
        return []
