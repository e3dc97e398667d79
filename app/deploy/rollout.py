"""Fleet rollout over MQTT in pull mode (firmware/PROTOCOL.md section 5.2).

The operator publishes every chunk ONCE, retained, QoS 1, to a content-addressed topic
`tinymlops/v1/<site>/models/<sha256>/<index>`; each device is told (XFER_BEGIN flag PULL) to fetch
them from the broker, so the operator's uplink carries the model once however many devices take
it, and a device that reconnects simply gets the retained chunks again. Devices are driven with a
concurrency limit; a staged rollout runs a canary group first and stops unless enough of it
succeeded. The retained chunks are cleared when the rollout ends, whatever its outcome; when the
broker cannot be reached then, the clean-up is remembered (app/deploy/cleanups.py) and finished
when it is back.

The operator's own connection may drop and come back during a rollout (paho reconnects): every step
waits for it up to `link_ride_out_s` instead of failing at once, and a transfer the device may have
begun is aborted on every failure path, so a failed rollout does not leave devices BUSY.

Host deployment latency is the same figure as on the push path (PROTOCOL.md 5.3): from the first
byte the operator sends for the deployment (here: the first model chunk published, or the start of
the device's group in a staged rollout) to the device's answer to XFER_COMMIT.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from app.deploy.finish import commit
from app.deploy.signatures import wants_signature
from app.deploy.transfer import (
    ABORT_TIMEOUT_S,
    CHUNK_OVERHEAD,
    COMMIT_TIMEOUT_S,
    DEFAULT_BENCH_COUNT,
    TransferStats,
    benchmark,
    device_error,
    listen,
)
from app.domain.errors import Cancelled, DeviceError, LinkError, ProtocolError, TinyMLOpsError
from app.protocol import topics
from app.protocol.codes import MAX_CHUNK, CommitMode, DeviceState, ErrorCode, EventCode, XferFlags
from app.protocol.image import sha256
from app.protocol.messages import (
    Event,
    GetInfo,
    Hello,
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
from app.services import cleanups

log = logging.getLogger(__name__)

# Devices fetching at once: each pull is mostly broker work; more than this mainly adds contention.
DEFAULT_CONCURRENCY = 8
# A command (GET_INFO, XFER_BEGIN, XFER_QUERY) to one device over the broker; a reply is one hop.
COMMAND_TIMEOUT_S = 5.0
# Resends of a command whose reply did not come (QoS 1 delivers, but the device may be busy).
COMMAND_RETRIES = 2
# A pulling device reports every PULL_STATUS_INTERVAL_S (0.5 s); this much silence -> XFER_QUERY.
PULL_QUIET_S = 3.0
# Queries in a row without progress before the device is declared stuck.
PULL_STALL_QUERIES = 3
# Retained device HELLOs arrive right after subscribing; this bounds the wait for missing ones.
DISCOVERY_TIMEOUT_S = 5.0
# An outage of the operator's own broker connection that a rollout waits out before failing: a
# restarted broker is back within seconds, and paho retries at least every RECONNECT_MAX_S (30 s).
LINK_RIDE_OUT_S = 60.0
# Waiting for the broker to acknowledge the published chunks (hundreds of QoS 1 messages) while connected.
PUBLISH_ACK_TIMEOUT_S = 30.0

DeviceProgressFn = Callable[[str, int, int], None]


def publish_size(topic: str, payload: bytes, qos: int = 1) -> int:
    """Bytes of one MQTT 3.1.1 PUBLISH packet: what the operator's uplink actually carries."""
    remaining = 2 + len(topic.encode()) + (2 if qos else 0) + len(payload)
    varint = 1 if remaining < 128 else 2 if remaining < 16384 else 3 if remaining < 2097152 else 4
    return 1 + varint + remaining


@dataclass
class PullResult:
    device_id: str
    stats: TransferStats | None = None
    error: TinyMLOpsError | None = None
    skipped: str = ""  # why the device was not attempted (canary failed, cancelled)

    @property
    def ok(self) -> bool:
        return self.stats is not None and self.error is None and not self.skipped


@dataclass
class RolloutReport:
    results: list[PullResult] = field(default_factory=list)
    image_size: int = 0
    chunk_size: int = 0
    n_chunks: int = 0
    published_bytes: int = 0  # every MQTT PUBLISH the operator sent: chunks, commands, clean-up
    chunk_bytes: int = 0  # of which the model chunks (published once per site)
    elapsed_s: float = 0.0
    canary_rate: float | None = None
    chunks_left_on_broker: int = 0  # retained chunks not cleared (broker unreachable); cleared later


def _remembered_sites() -> dict[str, str]:
    """Device id -> site from the fleet memory (where each device was last heard), or nothing."""
    from app.services.fleet_memory import FleetMemory, default_path

    return {d: e["site"] for d, e in FleetMemory(default_path()).known().items() if e.get("site")}


def find_devices(connection, device_ids: list[str], timeout: float = DISCOVERY_TIMEOUT_S,
                 sites: dict[str, str] | None = None) -> dict[str, Hello]:
    """Each online device's retained HELLO (its site, slot, max chunk), from the broker alone.

    Devices whose retained status says OFFLINE (their last will) are left out at once; only devices
    the broker knows nothing about cost the timeout. A broker that does not send retained messages
    to wildcard filters (RabbitMQ) still sends them to exact topics: a device's exact status topic
    is subscribed too once its site is known, from `sites` (default: the fleet memory) or from its
    telemetry or heartbeat, whichever comes first."""
    from app.protocol.messages import decode

    found: dict[str, Hello] = {}
    resolved: set[str] = set()
    lock = threading.Lock()
    done = threading.Event()
    wanted = set(device_ids)
    filters: list[tuple[str, Callable[[str, bytes], None]]] = []
    looked_up: set[str] = set()  # exact status topic subscribed
    asked: set[str] = set()  # GET_INFO sent
    closed = False

    def on_status(topic: str, payload: bytes) -> None:
        parsed = topics.parse_device_topic(topic)
        if not parsed or parsed[1] not in wanted or not payload:
            return
        try:
            msg = decode(payload).msg
        except ProtocolError:
            return
        if not isinstance(msg, Hello):
            return
        with lock:
            if msg.state != DeviceState.OFFLINE:
                found[parsed[1]] = msg.clamped()  # a spoofed max_chunk cannot force tiny chunks
            else:
                found.pop(parsed[1], None)
            resolved.add(parsed[1])
            if wanted <= resolved:
                done.set()

    def look_up(site: str, device_id: str, ask: bool = False) -> None:
        """Subscribe the device's exact status topic (once) and, when `ask`, its reply topic and send
        it GET_INFO once (its HELLO answers; on_status takes it like a status); caller holds `lock`."""
        if closed or device_id in resolved or not topics.valid_id(site):
            return
        leaves = [leaf for leaf, done_set in ((topics.STATUS, looked_up), (topics.REPLY, asked))
                  if (leaf == topics.STATUS or ask) and device_id not in done_set]
        for leaf in leaves:  # subscribed before the question leaves: the broker keeps our order
            topic = topics.device_topic(site, device_id, leaf)
            filters.append((topic, on_status))
            connection.subscribe(topic, on_status)
        looked_up.add(device_id)
        if topics.REPLY in leaves:
            asked.add(device_id)
            connection.publish(topics.device_topic(site, device_id, topics.CMD),
                               encode(GetInfo(), secrets.randbits(16)), qos=1)

    def on_telemetry(topic: str, payload: bytes) -> None:
        # an online device named by its telemetry: ask it directly (a RabbitMQ cluster keeps its
        # retained HELLO on the node it published to, where our exact subscription may not be)
        parsed = topics.parse_device_topic(topic)
        if parsed and parsed[1] in wanted:
            with lock:
                try:
                    look_up(parsed[0], parsed[1], ask=True)
                except LinkError as exc:
                    log.warning("could not ask %s for its HELLO: %s", parsed[1], exc)

    if not connection.connected:  # our own outage: wait for the reconnect before looking
        connection.wait_connected(LINK_RIDE_OUT_S)
    known_sites = _remembered_sites() if sites is None else sites
    with lock:
        for d in device_ids:
            filters.append((f"{topics.ROOT}/+/{d}/{topics.STATUS}", on_status))
            filters.append((f"{topics.ROOT}/+/{d}/{topics.TELEMETRY}", on_telemetry))
        for topic_filter, handler in list(filters):
            connection.subscribe(topic_filter, handler)
        for d in device_ids:
            if d in known_sites:
                look_up(known_sites[d], d)
    try:
        done.wait(timeout)
    finally:
        with lock:
            closed = True
            subscribed = list(filters)
        for topic_filter, handler in subscribed:
            connection.unsubscribe(topic_filter, handler)
    with lock:
        return dict(found)


def not_online(connection, device_id: str, broker: str | None = None) -> str:
    """Why `device_id` was not found by find_devices: the device, or this operator's own link (11.20)."""
    problem = connection.link_problem()
    where = broker or connection.url.address
    if problem:
        return f"device {device_id}: no status seen, but {problem}; the device may well be online"
    return f"device {device_id} is not online on {where} (no status from it)"


class _Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.total = 0

    def add(self, n: int) -> None:
        with self.lock:
            self.total += n


class Rollout:
    """One image to many devices through the broker; `run()` returns a RolloutReport.

    `targets` maps device id -> its HELLO (site, max_chunk, free_slot), e.g. from find_devices.
    `channel_factory(connection, site, device_id)` makes a DeviceChannel (MqttChannel by default).
    """

    def __init__(self, connection, image: bytes, targets: dict[str, Hello], *, model_name: str = "",
                 model_version: int = 0, concurrency: int = DEFAULT_CONCURRENCY, canary: int = 0,
                 canary_threshold: float = 1.0, mode: CommitMode = CommitMode.ACTIVATE,
                 trial_timeout_s: int = 0, bench_count: int = DEFAULT_BENCH_COUNT,
                 progress: DeviceProgressFn | None = None, cancel: threading.Event | None = None,
                 channel_factory: Callable | None = None, command_timeout_s: float = COMMAND_TIMEOUT_S,
                 pull_quiet_s: float = PULL_QUIET_S, commit_timeout_s: float = COMMIT_TIMEOUT_S,
                 link_ride_out_s: float | None = None,
                 pending_cleanups: cleanups.PendingCleanups | None = None,
                 signature: bytes | None = None, max_chunk: int = MAX_CHUNK) -> None:
        if not targets:
            raise ValueError("no devices to roll out to")
        self.connection = connection
        self.image = bytes(image)
        self.sha = sha256(self.image)
        self.targets = dict(targets)
        self.model_name, self.model_version = model_name, model_version
        self.concurrency = max(1, concurrency)
        self.canary = max(0, min(canary, len(targets)))
        self.canary_threshold = canary_threshold
        self.mode, self.trial_timeout_s, self.bench_count = mode, trial_timeout_s, bench_count
        self.progress = progress
        self.cancel = cancel or threading.Event()
        if channel_factory is None:
            from app.services.channel import MqttChannel

            channel_factory = MqttChannel
        self.channel_factory = channel_factory
        self.command_timeout_s = command_timeout_s
        self.pull_quiet_s = pull_quiet_s
        self.commit_timeout_s = commit_timeout_s
        self.link_ride_out_s = LINK_RIDE_OUT_S if link_ride_out_s is None else link_ride_out_s
        self.pending_cleanups = pending_cleanups
        self.signature = signature  # PROTOCOL.md 6.2 block: XFER_SIGN to devices with caps SIGNED
        self._clock_lock = threading.Lock()
        self._group_t0: float | None = None  # latency clock of the running group (see module doc)
        # every device must take the chunks as published: the smallest advertised maximum wins (and the
        # broker's, when it does not carry a whole MAX_CHUNK one: api.broker_chunk_limit)
        self.chunk_size = min([MAX_CHUNK, max_chunk] + [h.max_chunk for h in targets.values() if h.max_chunk])
        self.n_chunks = -(-len(self.image) // self.chunk_size)
        self._published = _Counter()
        self._chunk_bytes = _Counter()
        self._republish_lock = threading.Lock()
        self._republished: dict[str, float] = {}  # site -> when its chunks were last published again

    def _publish(self, topic: str, payload: bytes, retain: bool) -> None:
        with self._clock_lock:
            if self._group_t0 is None:
                self._group_t0 = time.perf_counter()  # the deployment's first byte
        self.connection.publish(topic, payload, qos=1, retain=retain)
        self._published.add(publish_size(topic, payload))

    def _prefix(self, site: str) -> str:
        return topics.model_chunk_prefix(site, self.sha.hex())

    def _publish_chunks(self, sites: set[str]) -> None:
        for site in sorted(sites):
            prefix = self._prefix(site)
            for index in range(self.n_chunks):
                if self.cancel.is_set():
                    raise Cancelled("rollout cancelled while publishing the model")
                data = self.image[index * self.chunk_size:(index + 1) * self.chunk_size]
                payload = encode(XferChunk(0, index, zlib.crc32(data) & 0xFFFFFFFF, data))
                topic = f"{prefix}/{index}"
                self._publish(topic, payload, retain=True)
                self._chunk_bytes.add(publish_size(topic, payload))
        self.settle()

    @property
    def broker(self) -> str:
        return cleanups.broker_key(self.connection)

    def link_note(self) -> str:
        """Words to add to a failure while the operator's own connection is down or stalled (11.20)."""
        problem = self.connection.link_problem()
        return f" ({problem}: the device may be fine)" if problem else ""

    def await_link(self) -> None:
        """Return once the operator's connection is up, waiting out an outage of up to
        `link_ride_out_s`; LinkError (naming our own link, not the device) after that."""
        if self.connection.connected:
            return
        log.info("rollout: waiting up to %.0f s for the connection to broker %s", self.link_ride_out_s, self.broker)
        if not self.connection.wait_connected(self.link_ride_out_s):
            raise LinkError(f"lost this operator's connection to broker {self.broker} and it did not come back "
                            f"within {self.link_ride_out_s:.0f} s")

    def settle(self) -> None:
        """Wait until the broker acknowledged everything published so far, riding out one outage."""
        try:
            self.connection.wait_published(PUBLISH_ACK_TIMEOUT_S)
            return
        except LinkError:
            if self.connection.connected:
                raise  # connected, yet the broker does not acknowledge: that one is slow
        self.await_link()
        self.connection.wait_published(PUBLISH_ACK_TIMEOUT_S)

    def republish(self, site: str) -> bool:
        """Publish a site's chunks again, when a pulling device makes no progress: a broker that
        restarted without persistence lost the retained copies, and the device would wait forever.
        Harmless to devices (a chunk they hold is ignored); throttled, so many stalled devices cost
        one re-publish per quiet period. Returns whether it published."""
        with self._republish_lock:
            now = time.monotonic()
            if now - self._republished.get(site, float("-inf")) < self.pull_quiet_s:
                return False
            self._republished[site] = now
        try:
            self._publish_chunks({site})
        except LinkError as exc:
            log.warning("re-publishing the model chunks for %s failed: %s", site, exc)
            return False
        return True

    def _clear_chunks(self, sites: set[str]) -> int:
        """Empty retained payloads delete the retained chunks from the broker (and the wait delivers
        any XFER_ABORT still queued). What the broker did not confirm is remembered and finished when
        it is back; returns the number of chunks left on the broker."""
        prefixes = [self._prefix(site) for site in sorted(sites)]
        store = self.pending_cleanups or cleanups.PendingCleanups()
        pending = [cleanups.Cleanup(self.broker, prefix, self.n_chunks, time.time()) for prefix in prefixes]
        # written down before waiting for a lost link: the process may be ended (Ctrl-C) while it waits
        remembered = not self.connection.connected
        if remembered:
            for cleanup in pending:
                store.add(cleanup)
        try:
            self.await_link()
            for prefix in prefixes:
                for index in range(self.n_chunks):
                    self._publish(f"{prefix}/{index}", b"", retain=True)
            self.settle()
            if remembered:
                for cleanup in pending:
                    store.remove(cleanup)
            return 0
        except LinkError as exc:
            if not remembered:
                for cleanup in pending:
                    store.add(cleanup)
            cleanups.finish_on_reconnect(self.connection, store)
            log.warning("%d retained model chunks stay on broker %s for now (%s); the clean-up is remembered in "
                        "%s and finished when the broker is back", len(prefixes) * self.n_chunks, self.broker,
                        exc, store.path)
            return len(prefixes) * self.n_chunks

    def run(self) -> RolloutReport:
        started = time.perf_counter()
        report = RolloutReport(image_size=len(self.image), chunk_size=self.chunk_size, n_chunks=self.n_chunks)
        order = list(self.targets)
        results: dict[str, PullResult] = {}
        sites = {h.site for h in self.targets.values()}
        store = self.pending_cleanups or cleanups.PendingCleanups()
        for site in sites:  # this rollout clears these chunks when it ends: no earlier clean-up may race it
            store.remove(cleanups.Cleanup(self.broker, self._prefix(site), self.n_chunks))
        try:
            self._publish_chunks(sites)
            groups = [order[:self.canary], order[self.canary:]] if self.canary else [order]
            for gi, group in enumerate(groups):
                if gi:  # a later group's deployment starts now: the chunks are already on the broker
                    with self._clock_lock:
                        self._group_t0 = time.perf_counter()
                for r in self._run_group(group):
                    results[r.device_id] = r
                if self.cancel.is_set():  # the operator stopped it: not a verdict on the canary
                    raise Cancelled("rollout cancelled")
                if self.canary and gi == 0:
                    ok = sum(results[d].ok for d in group)
                    report.canary_rate = ok / len(group)
                    if report.canary_rate < self.canary_threshold:
                        why = (f"canary group succeeded on {ok}/{len(group)} devices "
                               f"({report.canary_rate:.0%} < {self.canary_threshold:.0%}); rollout stopped")
                        log.warning(why)
                        for d in groups[1]:
                            results[d] = PullResult(d, skipped=why)
                        break
        except Cancelled:
            for d in order:
                results.setdefault(d, PullResult(d, skipped="cancelled"))
        except LinkError as exc:  # publishing the model failed: no device was told to fetch it
            log.warning("rollout failed before any device was asked: %s", exc)
            for d in order:
                results.setdefault(d, PullResult(d, error=LinkError(f"model not published: {exc}")))
        finally:
            report.chunks_left_on_broker = self._clear_chunks(sites)
        report.results = [results.get(d, PullResult(d, skipped="not attempted")) for d in order]
        report.published_bytes = self._published.total
        report.chunk_bytes = self._chunk_bytes.total
        report.elapsed_s = time.perf_counter() - started
        return report

    def _run_group(self, group: list[str]) -> list[PullResult]:
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(group)) or 1,
                                thread_name_prefix="rollout") as pool:
            return list(pool.map(self._one, group))

    def _one(self, device_id: str) -> PullResult:
        if self.cancel.is_set():
            return PullResult(device_id, skipped="cancelled")
        hello = self.targets[device_id]
        try:
            channel = self.channel_factory(self.connection, hello.site, device_id)
        except TinyMLOpsError as exc:
            return PullResult(device_id, error=exc)
        try:
            stats = _PullTransfer(self, channel, device_id, hello.site).run()
            return PullResult(device_id, stats=stats)
        except Cancelled as exc:
            return PullResult(device_id, error=exc, skipped="cancelled")
        except TinyMLOpsError as exc:
            log.warning("rollout to %s failed: %s", device_id, exc)
            return PullResult(device_id, error=exc)
        finally:
            try:
                channel.close()
            except Exception:
                log.debug("closing channel failed", exc_info=True)


class _PullTransfer:
    """One device fetching the published chunks: XFER_BEGIN(PULL) -> status reports -> COMMIT."""

    def __init__(self, rollout: Rollout, channel, device_id: str, site: str) -> None:
        self.r = rollout
        self.channel = channel
        self.device_id = device_id
        self.cmd_topic = topics.device_topic(site, device_id, topics.CMD)
        self.site = site
        self.source = rollout._prefix(site)
        self.stats = TransferStats(transfer_id=secrets.randbits(32), image_size=len(rollout.image),
                                   chunk_size=rollout.chunk_size, n_chunks=rollout.n_chunks)
        self.inbox: queue.Queue[Packet] = queue.Queue()
        self._unsubscribe = listen(channel, self.inbox.put)
        self._started = 0.0
        self._begun = False

    def _request(self, msg: Message, timeout: float, retries: int,
                 cancel: threading.Event | None = None) -> Message:
        payload = encode(msg)
        self.r._published.add(publish_size(self.cmd_topic, payload))
        self.stats.wire_bytes += len(payload)
        try:
            if cancel is None:
                return self.channel.request(msg, timeout=timeout, retries=retries).msg
            return self.channel.request(msg, timeout=timeout, retries=retries, cancel=cancel).msg
        except DeviceError as exc:
            raise device_error(self.device_id, exc.code, str(exc)) from exc

    def _progress(self, received: int) -> None:
        if self.r.progress is not None:
            self.r.progress(self.device_id, min(received * self.r.chunk_size, len(self.r.image)),
                            len(self.r.image))

    def _status(self, msg: Message) -> XferStatus:
        self.r.await_link()
        try:
            reply = self._request(msg, self.r.command_timeout_s, COMMAND_RETRIES)
        except LinkError as exc:
            if self.r.connection.connected:
                raise LinkError(f"device {self.device_id} did not answer {msg.TYPE.name}: {exc}"
                                f"{self.r.link_note()}") from exc
            # our own link is down, not (necessarily) the device: wait for it and ask once more
            note = self.r.link_note()
            try:
                self.r.await_link()
                reply = self._request(msg, self.r.command_timeout_s, COMMAND_RETRIES)
            except LinkError as again:
                raise LinkError(f"device {self.device_id} did not answer {msg.TYPE.name}: {again}{note}") from again
        return reply  # XferBegin/XferQuery are answered by XferStatus only (typed requests)

    def _begin(self) -> XferStatus:
        return self._status(XferBegin(self.stats.transfer_id, len(self.r.image), self.r.chunk_size,
                                      int(XferFlags.PULL), self.r.sha, self.r.model_name,
                                      self.r.model_version, self.source))

    def _wait_complete(self, status: XferStatus) -> None:
        received = status.received
        self._progress(received)
        quiet_queries = 0
        last = received
        # progress, not traffic, resets the clock: a device that keeps reporting the same count (or
        # sends anything else) without fetching must still reach the query and stall checks
        quiet_since = time.monotonic()
        while received < self.r.n_chunks:
            if self.r.cancel.is_set():
                raise Cancelled(f"deployment to {self.device_id} cancelled")
            if not self.r.connection.connected:  # our outage is not the device's silence
                self.r.await_link()
                quiet_since = time.monotonic()
            left = quiet_since + self.r.pull_quiet_s - time.monotonic()
            try:
                pkt = self.inbox.get(timeout=left) if left > 0 else None
            except queue.Empty:
                pkt = None
            if pkt is not None:
                msg = pkt.msg
                self.stats.wire_bytes_in += len(encode(msg, pkt.seq))
                if isinstance(msg, XferStatus) and msg.transfer_id == self.stats.transfer_id:
                    received = msg.received
                    self._progress(received)
                elif isinstance(msg, Event) and msg.code == EventCode.BOOTED:
                    self.stats.events.append("device rebooted")
                    self.stats.resyncs += 1
                    received = self._begin().received  # same sha256: resumes
                if received > last:
                    last, quiet_queries, quiet_since = received, 0, time.monotonic()
                continue
            # no progress for pull_quiet_s: ask, and re-announce when the device lost the transfer
            quiet_since = time.monotonic()
            try:
                received = self._status(XferQuery(self.stats.transfer_id)).received
            except DeviceError as exc:
                if exc.code != ErrorCode.NO_TRANSFER:
                    raise
                self.stats.resyncs += 1
                received = self._begin().received
            if received > last:
                last, quiet_queries, quiet_since = received, 0, time.monotonic()
                self._progress(received)
            else:
                quiet_queries += 1
                if self.r.republish(self.site):
                    log.info("%s: no progress at chunk %d; model chunks published again", self.device_id, received)
                    self.stats.events.append("model chunks published again (the broker had lost them)")
                if quiet_queries >= PULL_STALL_QUERIES:
                    raise LinkError(f"device {self.device_id} stopped fetching the model at chunk "
                                    f"{received}/{self.r.n_chunks}")

    def run(self) -> TransferStats:
        with self.r._clock_lock:
            self._started = self.r._group_t0 or time.perf_counter()
        try:
            # from the moment XFER_BEGIN leaves, the device may have begun, even if its reply is lost
            self._begun = True
            try:
                status = self._begin()
            except DeviceError:
                self._begun = False  # refused: the device began nothing
                raise
            self.stats.resumed_chunks = status.received
            self._wait_complete(status)
            self.stats.transfer_s = time.perf_counter() - self._started
            if wants_signature(self.r.targets[self.device_id].caps, self.r.signature):
                # kept by the device for this transfer, checked at COMMIT; answered by ACK, and our own
                # outages are ridden out as for XFER_BEGIN/QUERY
                self._status(XferSign(self.stats.transfer_id, self.r.signature))
            # a lost reply is resolved with GET_INFO, as on the push path (app.deploy.finish)
            reply = commit(self._request, self.device_id, self.stats.transfer_id, self.r.sha, self.r.model_version,
                           self.r.mode, self.r.trial_timeout_s, deadline_s=self.r.commit_timeout_s)
            self.stats.host_deploy_s = time.perf_counter() - self._started
            self._begun = False  # committed: nothing of ours is left to abort
            self.stats.wire_bytes += self.r.n_chunks * CHUNK_OVERHEAD + len(self.r.image)  # what the broker delivered
            if self.r.mode == CommitMode.STORE:
                self.stats.latency = reply
                return self.stats
            self.stats.latency, why = benchmark(
                lambda msg, timeout, retries: self._request(msg, timeout, retries, cancel=self.r.cancel),
                self.device_id, reply, self.r.bench_count, caps=self.r.targets[self.device_id].caps,
                cancel=self.r.cancel)
            if why:
                self.stats.events.append(f"no inference figures: {why}")
            return self.stats
        except TinyMLOpsError:
            # every failure path (a lost link included): a transfer left open would keep the device
            # BUSY for XFER_STALE_S. Unconfirmed, the QoS 1 abort stays queued and goes out when the
            # link is back; the rollout waits for that before it returns (_clear_chunks).
            if self._begun:
                try:
                    self.channel.request(XferAbort(self.stats.transfer_id), timeout=ABORT_TIMEOUT_S, retries=0)
                except TinyMLOpsError as exc:
                    log.info("XFER_ABORT to %s not confirmed yet: %s", self.device_id, exc)
            raise
        finally:
            self._unsubscribe()
