"""Push transfer of a model image over one DeviceChannel (firmware/PROTOCOL.md sections 5.1-5.3).

XFER_BEGIN -> the device's bitmap -> only the missing chunks, with a window of chunks in flight
(not stop-and-wait, so a serial line stays busy) -> XFER_QUERY to confirm -> XFER_COMMIT.
A lost ACK, a CHUNK_CRC or a timeout retransmits one chunk; a link drop or a device reboot
re-synchronises with XFER_BEGIN (same SHA-256: the device says what it already holds) and sends
only the rest. Cancellation is cooperative (a threading.Event) and ends with a best-effort
XFER_ABORT. The device alone decides what is activated; this module only moves bytes and reads
the verdict.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from app.deploy.finish import (
    BENCHMARK_ATTEMPTS,
    COMMIT_DEADLINE_S,
    COMMIT_PROBE_S,
    benchmark,
    commit,
    device_error,
)
from app.domain.errors import Cancelled, DeviceError, LinkError, ProtocolError
from app.protocol import framing
from app.protocol.codes import MAX_CHUNK, Caps, CommitMode, ErrorCode, EventCode, MsgType
from app.protocol.image import sha256
from app.protocol.messages import (
    Ack,
    Error,
    Event,
    Latency,
    Message,
    Packet,
    XferAbort,
    XferBegin,
    XferChunk,
    XferQuery,
    XferSign,
    XferStatus,
    encode,
)

log = logging.getLogger(__name__)

# Chunks in flight: at 921600 baud a 4 KB chunk is ~45 ms on the wire and the ACK comes back in
# ~1 ms, so two would keep the line busy; 8 also hides MQTT broker round trips and thread
# scheduling jitter, and stays far below what a device buffers (one chunk at a time, in order).
WINDOW = 8
# Chunks in flight over MQTT: a broker round trip measured ~85 ms on loopback (Mosquitto without
# TCP_NODELAY: Nagle meets delayed ACK), so 8 x 2 KB per round trip would cap a push at ~190 KB/s;
# 32 covers it, and the broker, not the device, queues what is in flight.
MQTT_WINDOW = 32
# Time a device may take to ACK a chunk beyond its own line time: flash write, plus a full MQTT
# window queued at the broker on a slow plant link (32 x 4 KB at ~50 KB/s).
ACK_TIMEOUT_S = 3.0
# A chunk retransmitted this many times without an ACK means the link is gone: re-synchronise.
CHUNK_RETRIES = 3
# XFER_BEGIN/XFER_QUERY answer at once on every device; longer means the message or reply was lost.
BEGIN_TIMEOUT_S = 3.0
# Resends of XFER_BEGIN/XFER_QUERY before a re-synchronisation round counts as failed.
BEGIN_RETRIES = 2
# Overall bound on a COMMIT and the recovery of its lost reply (app.deploy.finish has the why).
COMMIT_TIMEOUT_S = COMMIT_DEADLINE_S
BENCH_ATTEMPTS = BENCHMARK_ATTEMPTS
# Re-synchronisation rounds in a row that acknowledge no new chunk before the device is declared gone.
STALL_ROUNDS = 4
# Pause before re-synchronising after a link error, so a reconnecting transport gets a chance.
RESYNC_BACKOFF_S = 0.5
# A link that went down (broker restart, plant network blip) gets this long to come back before a
# re-synchronisation round counts as failed; nothing is sent meanwhile (MQTT would only queue it).
LINK_WAIT_S = 30.0
# How often a wait for the link looks at the cancel event.
CANCEL_POLL_S = 0.1
# XFER_ABORT on cancel is best effort: the operator is not kept waiting for a dead link.
ABORT_TIMEOUT_S = 1.0
# Inferences the device times after activation (min/median/p95/max need a sample).
DEFAULT_BENCH_COUNT = 100
# XFER_CHUNK payload bytes besides the data: transfer_id u32, index u32, crc32 u32 (PROTOCOL.md 3),
# plus the 6-byte message header.
CHUNK_OVERHEAD = 6 + 12
# Every capability a device may advertise: what a caller that did not read the HELLO assumes.
ALL_CAPS = int(sum(Caps))

ProgressFn = Callable[[int, int], None]


class _Resync(Exception):
    """The pump lost its footing (link drop, reboot, stall): ask the device what it holds."""


@dataclass
class TransferStats:
    """What a transfer cost: host-measured latency and bytes on the wire (host -> device)."""

    transfer_id: int = 0
    image_size: int = 0
    chunk_size: int = 0
    n_chunks: int = 0
    chunks_sent: int = 0
    retransmits: int = 0
    resyncs: int = 0
    resumed_chunks: int = 0  # chunks the device held at the latest (re)synchronisation: not sent again
    wire_bytes: int = 0  # every byte the host sent for this transfer, framing included on serial
    wire_bytes_in: int = 0  # bytes of the device's replies
    host_deploy_s: float = 0.0  # first byte sent -> COMMIT reply (image verified, loaded, self-tested, active)
    transfer_s: float = 0.0  # first byte sent -> every chunk acknowledged
    latency: Latency | None = None
    events: list[str] = field(default_factory=list)


def listen(channel, callback: Callable[[Packet], None]) -> Callable[[], None]:
    """Register a packet listener; returns what removes it (DeviceChannel.remove_packet_listener)."""
    handle = channel.on_packet(callback)
    if callable(handle):
        return handle
    remove = getattr(channel, "remove_packet_listener", None)
    return (lambda: remove(callback)) if remove else (lambda: None)


class PushTransfer:
    """One image to one device over one channel; `run()` returns TransferStats or raises.

    `reconnect`, when given, returns a fresh channel after a link error (serial port re-opened);
    without it the same channel is retried (an MQTT connection reconnects by itself).
    `line_bytes_per_s` (serial: baud / 10) stretches the ACK timeout by the window's line time.
    `caps` is the device's HELLO capability set: a command whose capability is absent is never sent.
    `sha`, when the caller has it already, saves hashing the image again.
    """

    def __init__(self, channel, image: bytes, *, device_id: str, model_name: str = "",
                 model_version: int = 0, max_chunk: int = MAX_CHUNK, window: int = WINDOW,
                 framed: bool = False, line_bytes_per_s: float | None = None,
                 ack_timeout_s: float = ACK_TIMEOUT_S, begin_timeout_s: float = BEGIN_TIMEOUT_S,
                 commit_timeout_s: float = COMMIT_TIMEOUT_S, commit_probe_s: float = COMMIT_PROBE_S,
                 bench_reply_s: float | None = None, resync_backoff_s: float = RESYNC_BACKOFF_S,
                 reconnect: Callable[[], object] | None = None, progress: ProgressFn | None = None,
                 cancel: threading.Event | None = None, transfer_id: int | None = None, caps: int = ALL_CAPS,
                 sha: bytes | None = None, signature: bytes | None = None) -> None:
        if not image:
            raise ValueError("empty image")
        self.image = bytes(image)
        self.sha = sha or sha256(self.image)
        self.caps = int(caps)
        # the image's signature block (PROTOCOL.md 6.2): sent before COMMIT to a device that verifies
        self.signature = signature if signature and self.caps & Caps.SIGNED else None
        self.device_id = device_id
        self.model_name = model_name
        self.model_version = model_version
        self.chunk_size = max(1, min(int(max_chunk or MAX_CHUNK), MAX_CHUNK))
        self.window = max(1, window)
        self.framed = framed
        self.ack_timeout_s = ack_timeout_s
        if line_bytes_per_s:
            per_chunk = framing.wire_size(self.chunk_size + CHUNK_OVERHEAD) / line_bytes_per_s
            self.ack_timeout_s += (self.window + 1) * per_chunk
        self.begin_timeout_s = begin_timeout_s
        self.commit_timeout_s = commit_timeout_s
        self.commit_probe_s = commit_probe_s
        self.bench_reply_s = bench_reply_s
        self.resync_backoff_s = resync_backoff_s
        self.reconnect = reconnect
        self.progress = progress
        self.cancel = cancel or threading.Event()
        self.stats = TransferStats(transfer_id=transfer_id if transfer_id is not None else secrets.randbits(32),
                                   image_size=len(self.image))
        self._inbox: queue.Queue[Packet] = queue.Queue()
        self._channel = None
        self._unsubscribe: Callable[[], None] | None = None
        self._link_up = threading.Event()  # cleared while the channel reports its link down
        self._link_up.set()
        self._held: set[int] = set()
        self._started: float | None = None
        # XFER_BEGIN sent: from then on the device may hold a transfer of ours (its reply may be what
        # was lost), so every failure ends with XFER_ABORT, or the device stays BUSY for XFER_STALE_S
        self._begun = False
        self._set_channel(channel)

    # ----------------------------------------------------------------- channel plumbing

    @property
    def n_chunks(self) -> int:
        return -(-len(self.image) // self.chunk_size)

    def _set_channel(self, channel) -> None:
        self.close()
        self._channel = channel
        self._link_up.set()
        remove_packets = listen(channel, self._on_packet)
        on_state = getattr(channel, "on_state", None)
        if on_state is None:  # a channel without link state: a failed send says the link is gone
            self._unsubscribe = remove_packets
            return
        on_state(self._on_state)
        remove_state = getattr(channel, "remove_state_listener", lambda cb: None)

        def unsubscribe() -> None:
            remove_packets()
            remove_state(self._on_state)

        self._unsubscribe = unsubscribe

    def _on_state(self, up: bool, reason: str) -> None:
        if up:
            self._link_up.set()
        else:
            log.info("%s: link down (%s): sending stops until it is back", self.device_id, reason)
            self._link_up.clear()

    def _await_link(self) -> None:
        """Wait (cancellable) for the link to come back; _Resync when it does not within LINK_WAIT_S."""
        deadline = time.monotonic() + LINK_WAIT_S
        while not self._link_up.wait(CANCEL_POLL_S):
            self._check_cancel()
            if time.monotonic() > deadline:
                raise _Resync(f"link still down after {LINK_WAIT_S:g} s")

    def _on_packet(self, packet: Packet) -> None:
        self._inbox.put(packet)

    def _wire(self, msg: Message, seq: int) -> int:
        raw = encode(msg, seq)
        return len(framing.frame(raw)) if self.framed else len(raw)


    def _mark_start(self) -> None:
        if self._started is None:
            self._started = time.perf_counter()

    def _send_chunk(self, chunk: XferChunk) -> int:
        """Send one chunk; its wire bytes come from the channel that framed it (no second encoding)."""
        self._mark_start()
        send_counted = getattr(self._channel, "send_counted", None)
        if send_counted is not None:
            seq, wire = send_counted(chunk)
        else:  # a channel that does not count: the chunk's size is known without encoding it
            seq = self._channel.send(chunk)
            size = CHUNK_OVERHEAD + len(chunk.data)
            wire = framing.wire_size(size) if self.framed else size
        self.stats.wire_bytes += wire
        return seq

    def _request(self, msg: Message, timeout: float, retries: int, cancellable: bool = False) -> Packet:
        self._mark_start()
        self.stats.wire_bytes += self._wire(msg, 0)  # resends inside the channel are not visible here
        if cancellable:
            pkt = self._channel.request(msg, timeout=timeout, retries=retries, cancel=self.cancel)
        else:
            pkt = self._channel.request(msg, timeout=timeout, retries=retries)
        self.stats.wire_bytes_in += len(encode(pkt.msg, pkt.seq))
        return pkt

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled(f"deployment to {self.device_id} cancelled")

    def abort(self) -> None:
        """Tell the device to drop the transfer; never raises (the link may be the reason we stop).

        After a link error the channel is re-opened first when we know how (serial), so a device
        that accepted XFER_BEGIN is not left BUSY until XFER_STALE_S."""
        timeout = min(ABORT_TIMEOUT_S, self.begin_timeout_s)
        for attempt in range(2 if self.reconnect is not None else 1):
            if attempt:
                self._reconnect()
            try:
                self._channel.request(XferAbort(self.stats.transfer_id), timeout=timeout, retries=0)
                self._begun = False
                return
            except DeviceError as exc:  # NO_TRANSFER: the device holds nothing of ours
                log.debug("XFER_ABORT to %s: %s", self.device_id, exc)
                self._begun = False
                return
            except Exception as exc:
                log.info("XFER_ABORT to %s not confirmed: %s", self.device_id, exc)

    def close(self) -> None:
        if self._unsubscribe is not None:
            try:
                self._unsubscribe()
            except Exception:
                log.debug("unsubscribe failed", exc_info=True)
            self._unsubscribe = None

    # ----------------------------------------------------------------- phases

    def _adopt(self, status: XferStatus) -> None:
        """Take the device's view of the transfer: its id and bitmap (a device resumes only a
        transfer of the same image, size and chunk size, PROTOCOL.md 5.1; anything else is a bug)."""
        if status.image_size != len(self.image) or status.chunk_size != self.chunk_size:
            raise ProtocolError(f"device {self.device_id} reports a {status.image_size}-byte image in "
                                f"{status.chunk_size}-byte chunks for a {len(self.image)}-byte transfer in "
                                f"{self.chunk_size}-byte chunks")
        if status.n_chunks != self.n_chunks:
            raise ProtocolError(f"device {self.device_id} reports {status.n_chunks} chunks, expected {self.n_chunks}")
        self.stats.transfer_id = status.transfer_id
        self._held = {i for i in range(self.n_chunks) if status.has(i)}
        self._report()

    def _report(self) -> None:
        if self.progress is not None:
            done = sum(min(self.chunk_size, len(self.image) - i * self.chunk_size) for i in self._held)
            self.progress(done, len(self.image))

    def _begin(self) -> XferStatus:
        self._begun = True  # set before sending: the reply, not the command, may be what is lost
        msg = XferBegin(self.stats.transfer_id, len(self.image), self.chunk_size, 0, self.sha,
                        self.model_name, self.model_version, "")
        return self._status_request(msg)

    def _status_request(self, msg: Message) -> XferStatus:
        try:
            pkt = self._request(msg, self.begin_timeout_s, BEGIN_RETRIES)
        except DeviceError as exc:
            raise device_error(self.device_id, exc.code, str(exc)) from exc
        return pkt.msg  # XferBegin/XferQuery are answered by XferStatus only (typed requests)

    def _resync(self) -> None:
        """Ask the device which chunks it holds: XFER_QUERY, or XFER_BEGIN (same SHA-256, so the
        device resumes) when it lost the transfer; only the chunks it lacks are sent again."""
        self.stats.resyncs += 1
        if self.resync_backoff_s:
            self.cancel.wait(self.resync_backoff_s)  # a reconnecting transport gets a moment; cancel cuts it
        self._check_cancel()
        if self.reconnect is not None:
            self._reconnect()  # a fresh channel (or a failed attempt: the request below fails fast)
        else:
            self._await_link()  # the same channel reconnects by itself (MQTT)
        self._drain()
        try:
            try:
                status = self._status_request(XferQuery(self.stats.transfer_id))
            except DeviceError as exc:
                if exc.code != ErrorCode.NO_TRANSFER:
                    raise
                log.info("%s: the device lost the transfer; beginning it again", self.device_id)
                status = self._begin()
            self._adopt(status)
        except LinkError as exc:
            raise _Resync(str(exc)) from exc
        self.stats.resumed_chunks = max(self.stats.resumed_chunks, len(self._held))

    def _drain(self) -> None:
        while True:
            try:
                self._inbox.get_nowait()
            except queue.Empty:
                return

    def _chunk(self, index: int) -> XferChunk:
        data = self.image[index * self.chunk_size:(index + 1) * self.chunk_size]
        return XferChunk(self.stats.transfer_id, index, zlib.crc32(data) & 0xFFFFFFFF, data)

    def _pump(self) -> None:
        """Send every chunk the device lacks, W in flight, until each is acknowledged."""
        todo = deque(i for i in range(self.n_chunks) if i not in self._held)
        inflight: dict[int, tuple[int, float]] = {}  # seq -> (chunk index, deadline)
        tries: dict[int, int] = {}
        sent_once: set[int] = set()
        while todo or inflight:
            self._check_cancel()
            if not self._link_up.is_set():  # MQTT would queue every chunk (and retransmit) for the reconnect
                raise _Resync("link down")
            while todo and len(inflight) < self.window:
                index = todo.popleft()
                if index in self._held:
                    continue
                try:
                    seq = self._send_chunk(self._chunk(index))
                except LinkError as exc:
                    raise _Resync(f"send failed: {exc}") from exc
                self.stats.chunks_sent += 1
                if index in sent_once:
                    self.stats.retransmits += 1
                sent_once.add(index)
                inflight[seq] = (index, time.monotonic() + self.ack_timeout_s)
            if not inflight:
                continue
            wait = min(deadline for _, deadline in inflight.values()) - time.monotonic()
            try:
                pkt = self._inbox.get(timeout=max(0.0, min(wait, 0.25)))
            except queue.Empty:
                pkt = None
            while pkt is not None:  # every reply that is already here counts before any deadline does
                self._handle(pkt, inflight, todo, tries)
                try:
                    pkt = self._inbox.get_nowait()
                except queue.Empty:
                    pkt = None
            now = time.monotonic()
            for seq, (index, deadline) in list(inflight.items()):
                if deadline <= now:
                    del inflight[seq]
                    self._retry(index, todo, tries, "no ACK")

    def _retry(self, index: int, todo: deque[int], tries: dict[int, int], why: str) -> None:
        tries[index] = tries.get(index, 0) + 1
        if tries[index] > CHUNK_RETRIES:
            raise _Resync(f"chunk {index}: {why} after {CHUNK_RETRIES} retransmissions")
        log.debug("%s: chunk %d %s, retransmitting", self.device_id, index, why)
        todo.appendleft(index)

    def _handle(self, pkt: Packet, inflight: dict[int, tuple[int, float]], todo: deque[int],
                tries: dict[int, int]) -> None:
        msg = pkt.msg
        self.stats.wire_bytes_in += len(encode(msg, pkt.seq))
        if isinstance(msg, Event) and msg.code == EventCode.BOOTED:
            self.stats.events.append("device rebooted")
            raise _Resync("device rebooted")
        if isinstance(msg, Ack) and msg.ref_type == MsgType.XFER_CHUNK and pkt.seq in inflight:
            index, _ = inflight.pop(pkt.seq)
            if index not in self._held:
                self._held.add(index)
                self._report()
        elif isinstance(msg, Error) and msg.ref_type == MsgType.XFER_CHUNK and pkt.seq in inflight:
            index, _ = inflight.pop(pkt.seq)
            if msg.code == ErrorCode.CHUNK_CRC:
                self._retry(index, todo, tries, "arrived corrupted (CHUNK_CRC)")
            elif msg.code == ErrorCode.NO_TRANSFER:
                raise _Resync("device lost the transfer (NO_TRANSFER)")
            else:
                raise device_error(self.device_id, msg.code, msg.message)

    def _transfer(self) -> None:
        """Begin (or resume), then pump and confirm until the device holds every chunk."""
        for attempt in range(STALL_ROUNDS):
            try:
                self._adopt(self._begin())
                break
            except LinkError as exc:
                if attempt == STALL_ROUNDS - 1:
                    raise LinkError(f"device {self.device_id} is not answering: no reply to XFER_BEGIN "
                                    f"({exc})") from exc
                time.sleep(self.resync_backoff_s)
                self._check_cancel()
                self._reconnect()
        self.stats.chunk_size = self.chunk_size
        self.stats.n_chunks = self.n_chunks
        self.stats.resumed_chunks = len(self._held)
        idle_rounds = 0
        last_error = ""
        while True:
            before = len(self._held)
            try:
                if len(self._held) < self.n_chunks:
                    self._pump()
                status = self._status_request(XferQuery(self.stats.transfer_id))
                self._adopt(status)
                if len(self._held) == self.n_chunks:
                    return
            except (_Resync, LinkError) as exc:
                last_error = str(exc)
                log.info("%s: re-synchronising: %s", self.device_id, exc)
                try:
                    self._resync()
                except _Resync as again:
                    last_error = str(again)
            except DeviceError as exc:
                if exc.code != ErrorCode.NO_TRANSFER:
                    raise
                last_error = "device lost the transfer"
                try:
                    self._resync()
                except _Resync as again:
                    last_error = str(again)
            idle_rounds = idle_rounds + 1 if len(self._held) <= before else 0
            if idle_rounds >= STALL_ROUNDS:
                raise LinkError(f"device {self.device_id} stopped answering: no chunk acknowledged in "
                                f"{STALL_ROUNDS} attempts ({last_error})")

    def _reconnect(self) -> None:
        """A fresh channel after a link error, when we know how to make one; errors are retried later."""
        if self.reconnect is None:
            return
        try:
            self._set_channel(self.reconnect())
        except LinkError as exc:
            log.info("%s: reconnect failed: %s", self.device_id, exc)

    def _sign(self) -> None:
        """XFER_SIGN: the device keeps the block for this transfer and checks it at COMMIT."""
        if self.signature is None:
            return
        self._request(XferSign(self.stats.transfer_id, self.signature), self.begin_timeout_s, BEGIN_RETRIES)

    def _commit(self, mode: CommitMode, trial_timeout_s: int) -> Latency:
        """XFER_COMMIT; a lost reply is resolved by asking the device which image is active."""
        return commit(lambda msg, timeout, retries: self._request(msg, timeout, retries).msg, self.device_id,
                      self.stats.transfer_id, self.sha, self.model_version, mode, trial_timeout_s,
                      probe_s=self.commit_probe_s, deadline_s=self.commit_timeout_s, on_link_error=self._reconnect)

    def run(self, mode: CommitMode = CommitMode.ACTIVATE, trial_timeout_s: int = 0,
            bench_count: int = DEFAULT_BENCH_COUNT) -> TransferStats:
        """Transfer and commit; raises DeviceError (device's code), LinkError or Cancelled."""
        try:
            self._check_cancel()
            self._transfer()
            self.stats.transfer_s = time.perf_counter() - (self._started or time.perf_counter())
            self._sign()
            committed = self._commit(mode, trial_timeout_s)
            self.stats.host_deploy_s = time.perf_counter() - (self._started or time.perf_counter())
        except Exception:  # a bug's exception too: the device must not stay BUSY for XFER_STALE_S
            if self._begun:
                self.abort()
            self.close()
            raise
        self._begun = False  # committed: nothing of ours is left to abort
        try:
            if mode == CommitMode.STORE:
                self.stats.latency = committed
                return self.stats
            self.stats.latency, why = benchmark(
                lambda msg, timeout, retries: self._request(msg, timeout, retries, cancellable=True).msg,
                self.device_id, committed, bench_count, caps=self.caps, cancel=self.cancel,
                reply_s=self.bench_reply_s)
            if why:
                self.stats.events.append(f"no inference figures: {why}")
            return self.stats
        finally:
            self.close()
