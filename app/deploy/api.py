"""Deployment API for people and CI/CD jobs: deploy, rollback, confirm, history.

    from app.deploy.api import deploy, rollback, confirm, history
    results = deploy("pump-ae@latest", ["sim-001", "sim-002"], via="mqtt", broker="mqtt://host:1883")
    for r in results:
        print(r.device, r.outcome, r.host_deploy_s, r.load_us, r.inference_median_us, r.error_message)

`deploy` accepts a registry reference (`NAME@VERSION`, `NAME@latest`), a `.tmlm` path, image
bytes or what `load_image` returned (parsed once). It refuses, before sending a byte, an image that
is not a valid container, does not fit a device's free slot, or that its profile cannot run (ops,
arena: the fit table's words); a device that already runs the image is "already active" and keeps
its rollback target. One device over MQTT is a push transfer; several (or a canary rollout) are a
pull rollout through the broker, which carries the model once; each device's capabilities have the
last word (a push-only device is pushed to, a pull-only one pulled). Every device gets one
DeploymentResult with the three latencies and the outcome, and one row in the history; errors
carry the device's code and its human text. Nothing here raises for a device's failure: a
failed device is a result with `ok = False` (connection failures before any device is reached
still raise LinkError, after recording a failed row per named device). A refused ROLLBACK or
CONFIRM is recorded too ("rollback-failed", "confirm-failed").
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from app.deploy import links, signatures
from app.deploy.finish import device_error, error_text
from app.deploy.history import DeploymentFigures, DeploymentHistory, DeploymentRecord
from app.deploy.rollout import DEFAULT_CONCURRENCY, Rollout, find_devices, not_online
from app.deploy.transfer import (
    DEFAULT_BENCH_COUNT,
    MQTT_WINDOW,
    WINDOW,
    PushTransfer,
    TransferStats,
)
from app.domain.errors import Cancelled, DeviceError, LinkError, ModelError, ProtocolError, TinyMLOpsError
from app.domain.profiles import PROFILES
from app.protocol.codes import MAX_CHUNK, PROTOCOL_VERSION, Caps, CommitMode, DeviceState, ErrorCode, LatencyFlags
from app.protocol.framing import line_bytes_per_s
from app.protocol.image import ModelImage, sha256
from app.protocol.messages import Confirm, Hello, Rollback
from app.transport.local_broker import resolve_broker
from app.transport.urls import parse_broker_url

log = logging.getLogger(__name__)

DeviceProgressFn = Callable[[str, int, int], None]
# fit_gate(parsed image or its bytes, device ids, open broker connection or None) -> {device: why refused}
FitGateFn = Callable[[ModelImage | bytes, list[str], object], dict[str, str]]
# ROLLBACK/CONFIRM reload a model on the device (load + self-test): longer than a plain query.
SWITCH_TIMEOUT_S = 30.0
# Chunk bytes on a broker the probe saw drop a MAX_CHUNK message (a packet-size cap, as managed brokers
# and `max_packet_size` set): a quarter of MAX_CHUNK fits the 2 KB caps seen; a cap below even this
# stalls the transfer, which then fails with the probe's sentence in the log.
CAPPED_BROKER_CHUNK = 1024
# Largest bench count and trial timeout XFER_COMMIT can carry (u16 fields).
U16_MAX = 0xFFFF


@dataclass
class DeploymentResult(DeploymentFigures):
    """One device's deployment outcome, with the paper's three latencies (the figures) and what
    the caller also wants to know: retries on the way and where the history keeps it."""

    resumed_chunks: int = 0
    retransmits: int = 0
    record_id: int | None = None
    # bytes the operator published for the whole MQTT pull rollout this device was part of (chunks
    # once per site, plus every command): the uplink cost, shared by the rollout's devices
    rollout_published_bytes: int | None = None
    rollout_chunk_bytes: int | None = None  # of which the model chunks: about one image, whatever the device count
    notes: list[str] = field(default_factory=list)  # what happened on the way (resyncs, reboots, no figures)

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LoadedImage:
    """A model image parsed and hashed once for a whole deployment, with what the fit check needs."""

    data: bytes
    name: str
    version: int
    sha: bytes = b""
    tflite: bytes = b""
    ops: list[str] | None = None  # from the registry's record, else read from the flatbuffer when needed
    arena: int | None = None
    signature: bytes | None = None  # the 80-byte block (PROTOCOL.md 6.2), None when unsigned
    signed_by: str | None = None  # its key id (hex), as the history records it
    parsed: ModelImage | None = None  # the image as load_image parsed it (the fit gate reads it, not the bytes)

    def __post_init__(self) -> None:
        if not self.sha:
            self.sha = sha256(self.data)

    @property
    def sha_hex(self) -> str:
        return self.sha.hex()

    def model_image(self) -> ModelImage:
        """The parsed image: load_image's, or parsed here once for a LoadedImage built by hand."""
        if self.parsed is None:
            self.parsed = ModelImage.from_bytes(self.data)
        return self.parsed

    def fit_figures(self) -> tuple[list[str], int]:
        """Ops and minimum arena (the real TFLM, as `model check`), computed once per image."""
        if self.ops is None or self.arena is None:
            from app.ml import tflm

            self.ops = tflm.model_ops(self.tflite)
            self.arena = tflm.min_arena_size(self.tflite)
        return self.ops, self.arena




def load_image(ref_or_image: str | Path | bytes | LoadedImage, registry=None) -> LoadedImage:
    """Image bytes from bytes, a `.tmlm` file or a registry reference; ModelError when unusable.
    A LoadedImage is returned as it is (a caller that checked the image does not parse it again)."""
    if isinstance(ref_or_image, LoadedImage):
        return ref_or_image
    ops = arena = signature = None
    from_registry = False
    if isinstance(ref_or_image, bytes | bytearray):
        data = bytes(ref_or_image)
    else:
        text = str(ref_or_image)
        path = Path(text)
        if text.endswith(".tmlm") or path.is_file():
            if not path.is_file():
                raise ModelError(f"model image file {text} does not exist")
            data = path.read_bytes()
        else:  # a registry reference: NAME@VERSION, NAME@latest or NAME (latest)
            from app.ml.registry import Registry

            from_registry = True
            if registry is not None:
                mv = registry.resolve(text)
                data, signature = registry.image_bytes(mv), signatures.registry_signature(registry, mv)
            else:
                with Registry() as reg:
                    mv = reg.resolve(text)
                    data, signature = reg.image_bytes(mv), signatures.registry_signature(reg, mv)
            ops, arena = list(mv.ops), int(mv.arena)
    try:
        if not from_registry:  # an exported file carries its signature block after the image
            data, signature = signatures.split_file(data)
        img = ModelImage.from_bytes(data)
    except ModelError as exc:
        raise ModelError(f"not a deployable model image: {exc}") from exc
    if img.selftest_input is None:
        raise ModelError("the model image has no self-test section; devices refuse to activate it")
    signed_by = (signatures.check_file(data, signature, img.name, img.version) if not from_registry
                 else signatures.SignatureBlock.from_bytes(signature).key_hex)
    return LoadedImage(data, img.name, img.version, tflite=img.tflite, ops=ops, arena=arena,
                       signature=signature, signed_by=signed_by, parsed=img)


def _result_from_stats(base: DeploymentResult, stats: TransferStats) -> DeploymentResult:
    base.wire_bytes = stats.wire_bytes
    base.host_deploy_s = stats.host_deploy_s
    base.resumed_chunks = stats.resumed_chunks
    base.retransmits = stats.retransmits
    base.notes = list(stats.events)
    lat = stats.latency
    if lat is not None:  # a figure the device did not report (lost reply, no benchmark) stays None
        base.device_deploy_us, base.load_us = lat.deploy_us or None, lat.load_us or None
        if lat.n:
            base.bench_n = lat.n
            base.inference_min_us, base.inference_median_us = lat.min_us, lat.median_us
            base.inference_p95_us, base.inference_max_us = lat.p95_us, lat.max_us
        base.emulated = bool(lat.flags & LatencyFlags.EMULATED)
    base.outcome = "ok"
    return base


def _fail(base: DeploymentResult, exc: BaseException, outcome: str = "failed") -> DeploymentResult:
    base.outcome = "cancelled" if isinstance(exc, Cancelled) else outcome
    base.error_code = getattr(exc, "code", None) or None
    base.error_message = str(exc)
    return base


def _refusal(hello: Hello, image: LoadedImage, device: str) -> DeviceError | None:
    """Up-front check on what the device advertised: an image that cannot fit, or a device that
    does not speak this protocol version, is never sent a byte (PROTOCOL.md 4.1 negotiation)."""
    if not hello.proto_min <= PROTOCOL_VERSION <= hello.proto_max:
        return DeviceError(f"device {device}: UNSUPPORTED_VERSION ({int(ErrorCode.UNSUPPORTED_VERSION)}): it speaks "
                           f"protocol {hello.proto_min}..{hello.proto_max}, this application {PROTOCOL_VERSION}",
                           code=ErrorCode.UNSUPPORTED_VERSION)
    unsigned = signatures.refusal(hello, image.signature, device)
    if unsigned is not None:
        return unsigned
    if len(image.data) > hello.free_slot:
        return DeviceError(f"device {device}: TOO_LARGE ({int(ErrorCode.TOO_LARGE)}): "
                           f"{error_text(ErrorCode.TOO_LARGE)}: image {len(image.data)} bytes, free slot "
                           f"{hello.free_slot} bytes", code=ErrorCode.TOO_LARGE)
    return _fit_refusal(hello, image, device)


def _fit_refusal(hello: Hello, image: LoadedImage, device: str) -> DeviceError | None:
    """What `model check` would say for this device's profile (ops, arena vs its RAM budget), before
    the first byte: the device would only refuse it at COMMIT, after the whole image was sent."""
    from app.ml.validation import fit_profile

    profile = PROFILES.get(hello.profile)
    if profile is None:  # a profile this application does not know: the device's COMMIT decides
        log.info("device %s: unknown profile %r, fit not checked before the transfer", device, hello.profile)
        return None
    if hello.ram_budget:  # the device's own figures win over the registry's (firmware may differ)
        profile = dataclasses.replace(profile, arena_budget=hello.ram_budget)
    try:
        ops, arena = image.fit_figures()
    except ModelError as exc:
        return DeviceError(f"device {device}: the model cannot be checked: {exc}", code=exc.code or ErrorCode.BAD_IMAGE)
    fit = fit_profile(profile, len(image.data), arena, ops)
    if fit.fits:
        return None
    code = ErrorCode.UNSUPPORTED_OP if fit.unsupported_ops else ErrorCode.ARENA_TOO_SMALL
    return DeviceError(f"device {device}: {code.name} ({int(code)}): model does not fit {profile.key}: "
                       f"{'; '.join(fit.reasons)}", code=code)


def _already_active(hello: Hello, image: LoadedImage, base: DeploymentResult) -> DeploymentResult | None:
    """A device that runs the image already needs no transfer: sending it again would make the
    active version its own rollback target and lose the real one (A/B slots, PROTOCOL.md 5.3)."""
    if hello.model_sha != image.sha[:8]:
        return None
    note = f"already active: nothing sent; rollback target v{hello.prev_version} kept" if hello.prev_version \
        else "already active: nothing sent"
    if hello.trial:
        note += " (on trial: CONFIRM or ROLLBACK it)"
    log.info("%s: %s v%d %s", base.device, image.name, image.version, note)
    base.outcome = "ok"
    base.trial = bool(hello.trial)  # what the device runs, not what was asked: nothing was activated
    base.notes = [note]
    return base


def deploy(ref_or_image: str | Path | bytes | LoadedImage, devices: list[str] | str | None = None, *, via: str = "mqtt",
           broker: str | None = None, port: str | None = None, baud: int = links.DEFAULT_BAUD,
           trial: bool = False, trial_timeout_s: int = 0, bench_count: int = DEFAULT_BENCH_COUNT,
           canary: int = 0, canary_threshold: float = 1.0, concurrency: int = DEFAULT_CONCURRENCY,
           pull: bool | None = None, progress: DeviceProgressFn | None = None,
           cancel: threading.Event | None = None, registry=None, history: DeploymentHistory | None = None,
           connection=None, fit_gate: FitGateFn | None = None,
           hellos: dict[str, Hello] | None = None) -> list[DeploymentResult]:
    """Deploy one model version to devices; one DeploymentResult per device (see module doc).

    `via="serial"` takes `port` (device path, pty or `socket://host:port`) and `baud`; `devices`
    is then optional (checked against the device's id when given). `via="mqtt"` takes `broker`
    (or an open `connection`). `pull` forces (True) or forbids (False) the broker-pull rollout.
    `fit_gate` (e.g. app.deploy.fit_check.FitGate) runs first: the devices it refuses get a "refused"
    result and are sent nothing.
    `hellos`: the devices' latest HELLOs when the caller holds them (the GUI's fleet monitor), so
    the broker is not asked again for those.
    """
    started = time.time()
    for field_name, value in (("bench_count", bench_count), ("trial_timeout_s", trial_timeout_s)):
        if not 0 <= int(value) <= U16_MAX:  # XFER_COMMIT carries both as u16 (PROTOCOL.md 3)
            raise ProtocolError(f"{field_name} must be 0..{U16_MAX}, not {value}", code=ErrorCode.BAD_ARGUMENT)
    image = load_image(ref_or_image, registry)
    if isinstance(devices, str):
        devices = [devices]
    devices = list(dict.fromkeys(devices or []))
    cancel = cancel or threading.Event()
    hist = history or DeploymentHistory()
    mode = CommitMode.TRIAL if trial else CommitMode.ACTIVATE
    if via == "serial":
        if not port:
            raise LinkError("--port is required for a serial deployment")
        if len(devices) > 1:
            raise LinkError("a serial port reaches one device; give one --device (or use MQTT)")
    elif via == "mqtt":
        if not devices:
            raise LinkError("name at least one --device for an MQTT deployment")
    else:
        raise LinkError(f"unknown transport {via!r}: use 'serial' or 'mqtt'")
    try:
        if via == "serial":
            results = _fit_gated(fit_gate, image, devices, None, "serial", trial, lambda ds: [_deploy_serial(
                image, ds[0] if ds else None, port, baud, mode, trial_timeout_s, bench_count, progress, cancel)])
        elif connection is not None:
            results = _fit_gated(fit_gate, image, devices, connection, "mqtt", trial, lambda ds: _deploy_mqtt(
                connection, broker, image, ds, mode, trial_timeout_s, bench_count, canary, canary_threshold,
                concurrency, pull, progress, cancel, _held_hellos(fit_gate, hellos)))
        else:
            with links.broker_connection(broker) as conn:
                results = _fit_gated(fit_gate, image, devices, conn, "mqtt", trial, lambda ds: _deploy_mqtt(
                    conn, resolve_broker(broker), image, ds, mode, trial_timeout_s, bench_count, canary,
                    canary_threshold, concurrency, pull, progress, cancel, _held_hellos(fit_gate, hellos)))
    except TinyMLOpsError as exc:
        # the link failed before any device answered (port does not open, wrong device on it,
        # broker unreachable): still an attempt the history must show, one row per named device
        transport = "serial" if via == "serial" else "mqtt"
        failed = [_fail(_base(image, d, transport, trial), exc) for d in (devices or [port])]
        _record(hist, failed, started, via, broker, port, baud)
        exc.results = failed  # what was recorded, for a caller that reports per device (CLI --json)
        raise
    _record(hist, results, started, via, broker, port, baud)
    return results


def _held_hellos(fit_gate: FitGateFn | None, hellos: dict[str, Hello] | None) -> dict[str, Hello]:
    """The HELLOs this deployment already holds: the caller's, and those the fit gate's capture saw
    (called once the gate has run)."""
    from app.deploy.fit_check import FitGate

    held = dict(fit_gate.hellos) if isinstance(fit_gate, FitGate) else {}
    held.update(hellos or {})
    return held


def _fit_gated(fit_gate: FitGateFn | None, image: LoadedImage, devices: list[str], connection, transport: str,
               trial: bool, deploy_rest: Callable[[list[str]], list[DeploymentResult]]) -> list[DeploymentResult]:
    """Run the fit-to-machine gate (when given) before any byte is sent: a device it refuses gets a
    "refused" result with its reason; the others go to `deploy_rest`. A serial deployment without
    a named device is not gated (the device is known only once the port is open)."""
    if fit_gate is None or not devices:
        return deploy_rest(devices)
    refusals = fit_gate(image.model_image(), devices, connection)
    rest = [d for d in devices if d not in refusals]
    done = {r.device: r for r in (deploy_rest(rest) if rest else [])}
    for device, text in refusals.items():
        done[device] = _fail(_base(image, device, transport, trial), ModelError(text), "refused")
    return [done[d] for d in devices if d in done] + [r for d, r in done.items() if d not in devices]


def _record(hist: DeploymentHistory, results: list[DeploymentResult], started: float, via: str,
            broker: str | None, port: str | None, baud: int) -> None:
    """One history row per device result (its record_id is set)."""
    for r in results:
        rec = DeploymentRecord(
            **r.figures(), started=started, baud=baud if via == "serial" else None,
            broker=_public_broker(broker) if via == "mqtt" else None, port=port if via == "serial" else None,
            broker_identity=broker_identity(broker) if via == "mqtt" else None)
        r.record_id = hist.add(rec)


def broker_identity(broker: str | None) -> str | None:
    """Who the operator is on the broker, for the audit trail: the user name, else the client
    certificate's common name (mqtts:// with cert=), else None (anonymous)."""
    try:
        url = parse_broker_url(resolve_broker(broker))
    except LinkError:
        return None
    if url.username:
        return url.username
    if url.cert:
        from app.trust.broker_kit import certificate_name

        return certificate_name(url.cert)
    return None


def _public_broker(broker: str | None) -> str:
    """The broker as the history shows it: never its password (the history is exported and shared)."""
    try:
        return str(parse_broker_url(resolve_broker(broker)))
    except LinkError:
        return "(invalid broker URL)"


def _base(image: LoadedImage, device: str, transport: str, trial: bool) -> DeploymentResult:
    return DeploymentResult(device=device, outcome="failed", model_name=image.name, model_version=image.version,
                            model_sha=image.sha_hex, transport=transport, image_size=len(image.data), trial=trial,
                            signed_by=image.signed_by)


def _push(link: links.DeviceLink, image: LoadedImage, base: DeploymentResult,
          mode: CommitMode, trial_timeout_s: int, bench_count: int, progress: DeviceProgressFn | None,
          cancel: threading.Event, chunk_cap: int = MAX_CHUNK) -> DeploymentResult:
    hello = link.hello
    refusal = _refusal(hello, image, base.device)
    if refusal is not None:
        return _fail(base, refusal, "refused")
    if _already_active(hello, image, base) is not None:
        return base
    if not hello.caps & Caps.PUSH_XFER:
        return _fail(base, LinkError(f"device {base.device} does not take pushed transfers (no PUSH_XFER)"),
                     "refused")
    if mode == CommitMode.TRIAL and not hello.caps & Caps.TRIAL:
        return _fail(base, LinkError(f"device {base.device} cannot activate on trial"), "refused")
    serial = link.transport == "serial"
    push = PushTransfer(
        link.channel, image.data, device_id=base.device, model_name=image.name, model_version=image.version,
        max_chunk=min(hello.max_chunk or MAX_CHUNK, chunk_cap), framed=serial, window=WINDOW if serial else MQTT_WINDOW,
        line_bytes_per_s=line_bytes_per_s(link.baud) if serial and link.baud else None,
        reconnect=link.reconnect, cancel=cancel, caps=hello.caps, sha=image.sha, signature=image.signature,
        progress=(lambda done, total: progress(base.device, done, total)) if progress else None)
    try:
        return _result_from_stats(base, push.run(mode, trial_timeout_s, bench_count))
    except TinyMLOpsError as exc:
        if isinstance(exc, Cancelled):
            log.info("%s", exc)
        else:
            log.warning("deployment to %s failed: %s", base.device, exc)
        base.wire_bytes = push.stats.wire_bytes
        return _fail(base, exc)


def _deploy_serial(image: LoadedImage, device: str | None, port: str, baud: int, mode: CommitMode,
                   trial_timeout_s: int, bench_count: int, progress, cancel) -> DeploymentResult:
    with links.serial_device(port, baud, device) as link:
        base = _base(image, link.hello.device_id, "serial", mode == CommitMode.TRIAL)
        return _push(link, image, base, mode, trial_timeout_s, bench_count, progress, cancel)


def _way(hello: Hello, want_pull: bool, pull: bool | None) -> str | None:
    """"push" or "pull" for this device from its capabilities (PROTOCOL.md 4.1), None when neither:
    the preferred way when the device has it, else the other unless the caller forbade it."""
    can_pull, can_push = bool(hello.caps & Caps.PULL_XFER), bool(hello.caps & Caps.PUSH_XFER)
    if want_pull:
        return "pull" if can_pull else ("push" if can_push and pull is not True else None)
    return "push" if can_push else ("pull" if can_pull and pull is not False else None)


def _remembered_site(devices: list[str]) -> str | None:
    """A site of these devices from the fleet memory: where the broker probe may publish."""
    from app.services.fleet_memory import FleetMemory, default_path

    known = FleetMemory(default_path()).known()
    return next((known[d]["site"] for d in devices if known.get(d, {}).get("site")), None)


def broker_chunk_limit(conn, site: str | None = None) -> int:
    """The largest chunk this broker carries as far as its probe knows (app.transport.broker_probe):
    MAX_CHUNK, or CAPPED_BROKER_CHUNK when it dropped a chunk-sized message (said in the log)."""
    from app.transport.broker_probe import capabilities_of

    caps = capabilities_of(conn, site=site)
    if caps is not None and caps.chunk_messages is False:
        log.warning("%s: sending %d-byte chunks", caps.describe(), CAPPED_BROKER_CHUNK)
        return CAPPED_BROKER_CHUNK
    return MAX_CHUNK


def _deploy_mqtt(conn, broker: str | None, image: LoadedImage, devices: list[str], mode: CommitMode,
                 trial_timeout_s: int, bench_count: int, canary: int, canary_threshold: float,
                 concurrency: int, pull: bool | None, progress, cancel,
                 known: dict[str, Hello] | None = None) -> list[DeploymentResult]:
    trial = mode == CommitMode.TRIAL
    want_pull = pull if pull is not None else (len(devices) > 1 or canary > 0)
    sites = sorted({h.site for h in (known or {}).values() if h.site})
    site = sites[0] if sites else _remembered_site(devices)
    chunk_cap = broker_chunk_limit(conn, site)  # probes the broker once per process (cached)
    if want_pull and pull is None:
        from app.transport.broker_probe import capabilities_of

        caps = capabilities_of(conn, site=site)
        if caps is not None and caps.retained_wildcard is False:  # tried and seen not to; unknown keeps pull
            # devices fetch `<source>/+`: such a broker would hand them no retained chunk, only the
            # stall detector's live re-publish. Push to every device that takes it (PROTOCOL.md 5.2).
            log.warning("%s: pushing to each device instead of a pull rollout", caps.describe())
            want_pull = False
    hellos = {d: known[d] for d in devices if known and d in known and known[d].state != DeviceState.OFFLINE}
    missing = [d for d in devices if d not in hellos]
    if missing:  # the retained HELLOs: one look at the broker for every device the caller had none of
        hellos.update(find_devices(conn, missing))
    results: dict[str, DeploymentResult] = {}
    targets: dict[str, Hello] = {}
    pushes: list[str] = []
    for d in devices:
        hello = hellos.get(d)
        way = _way(hello, want_pull, pull) if hello is not None else ("pull" if want_pull else "push")
        base = _base(image, d, "mqtt-pull" if way == "pull" else "mqtt-push", trial)
        results[d] = base
        if hello is None:
            results[d] = _fail(base, LinkError(not_online(conn, d, broker)))
            continue
        refusal = _refusal(hello, image, d)
        if refusal is not None:
            _fail(base, refusal, "refused")
        elif _already_active(hello, image, base) is not None:
            pass
        elif trial and not hello.caps & Caps.TRIAL:
            _fail(base, LinkError(f"device {d} cannot activate on trial (no TRIAL)"), "refused")
        elif way is None:
            needed = "PULL_XFER" if pull is True else "PUSH_XFER" if pull is False else "PUSH_XFER or PULL_XFER"
            _fail(base, LinkError(f"device {d} cannot take this transfer (no {needed})"), "refused")
        elif way == "pull":
            targets[d] = hello
        else:
            pushes.append(d)
    for d in pushes:  # devices that take pushed transfers only get the image on their command topic
        if cancel.is_set():
            results[d].outcome, results[d].error_message = "cancelled", "cancelled before the transfer"
            continue
        try:
            with links.mqtt_device(conn, d, broker, known=hellos[d]) as link:
                _push(link, image, results[d], mode, trial_timeout_s, bench_count, progress, cancel,
                      chunk_cap=chunk_cap)
        except TinyMLOpsError as exc:
            _fail(results[d], exc)
    if targets:
        report = Rollout(conn, image.data, targets, model_name=image.name, model_version=image.version,
                         concurrency=concurrency, canary=canary, canary_threshold=canary_threshold, mode=mode,
                         trial_timeout_s=trial_timeout_s, bench_count=bench_count, progress=progress,
                         cancel=cancel, signature=image.signature, max_chunk=chunk_cap).run()
        log.info("rollout: published %d bytes for %d devices x %d-byte image", report.published_bytes,
                 len(targets), len(image.data))
        for pr in report.results:
            base = results[pr.device_id]
            base.rollout_published_bytes = report.published_bytes
            base.rollout_chunk_bytes = report.chunk_bytes
            if pr.ok:
                _result_from_stats(base, pr.stats)
            elif pr.skipped and pr.error is None:
                base.outcome = "cancelled" if pr.skipped == "cancelled" else "skipped"
                base.error_message = pr.skipped
            else:
                _fail(base, pr.error or LinkError("unknown failure"))
    return [results[d] for d in devices]


# ------------------------------------------------------------------ rollback / confirm / history


@dataclass
class SwitchResult:
    """Outcome of ROLLBACK or CONFIRM: the model active afterwards (from the device's HELLO)."""

    device: str
    ok: bool
    model_name: str = ""
    model_version: int = 0
    prev_version: int = 0
    trial: bool = False
    error_code: int | None = None
    error_message: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _switch(command, outcome: str, device: str | None, via: str, broker: str | None, port: str | None,
            baud: int, history: DeploymentHistory | None, connection=None, known: Hello | None = None) -> SwitchResult:
    """`outcome` names the history row on success; a refusal is recorded as "<verb>-failed"."""
    failed_outcome = f"{type(command).__name__.lower()}-failed"

    def run(link: links.DeviceLink) -> SwitchResult:
        dev = link.hello.device_id
        started = time.time()

        def record(hello: Hello, outcome: str, err: DeviceError | None = None) -> None:
            hist = history or DeploymentHistory()
            hist.add(DeploymentRecord(
                started=started, device=dev, model_name=hello.model_name, model_version=hello.model_version,
                model_sha=hist.full_sha(dev, hello.model_sha.hex()), transport=link.transport, baud=link.baud,
                broker=_public_broker(link.broker) if link.transport == "mqtt" else None,
                port=link.port, trial=bool(hello.trial), outcome=outcome,
                error_code=err.code if err else None, error_message=str(err) if err else None))

        try:
            pkt = link.channel.request(command, timeout=SWITCH_TIMEOUT_S, retries=0)
        except DeviceError as exc:
            err = device_error(dev, exc.code, str(exc))
            record(link.hello, failed_outcome, err)  # the device keeps what it ran: the HELLO says what
            return SwitchResult(dev, False, link.hello.model_name, link.hello.model_version, link.hello.prev_version,
                                bool(link.hello.trial), err.code, str(err))
        hello = pkt.msg if isinstance(pkt.msg, Hello) else links.get_info(link.channel, dev)
        record(hello, outcome)
        return SwitchResult(dev, True, hello.model_name, hello.model_version, hello.prev_version, bool(hello.trial))

    with links.open_device(device, via, broker, port, baud, connection, known) as link:
        return run(link)


def rollback(device: str | None = None, *, via: str = "mqtt", broker: str | None = None, port: str | None = None,
             baud: int = links.DEFAULT_BAUD, history: DeploymentHistory | None = None,
             connection=None, known: Hello | None = None) -> SwitchResult:
    """Make the device's previous model active again (error NO_PREVIOUS when there is none).
    `known`: the device's HELLO the caller holds (its fleet monitor): the broker is not asked again."""
    return _switch(Rollback(), "rolled-back", device, via, broker, port, baud, history, connection, known)


def confirm(device: str | None = None, *, via: str = "mqtt", broker: str | None = None, port: str | None = None,
            baud: int = links.DEFAULT_BAUD, history: DeploymentHistory | None = None,
            connection=None, known: Hello | None = None) -> SwitchResult:
    """Make the model on trial permanent (error NOT_TRIAL when none is on trial).
    `known`: the device's HELLO the caller holds (its fleet monitor): the broker is not asked again."""
    return _switch(Confirm(), "confirmed", device, via, broker, port, baud, history, connection, known)


def history(device: str | None = None, limit: int | None = None,
            store: DeploymentHistory | None = None) -> list[DeploymentRecord]:
    """Recorded deployments, newest first."""
    return (store or DeploymentHistory()).list(device=device, limit=limit)


__all__ = ["DeploymentResult", "SwitchResult", "confirm", "deploy", "history", "load_image",
           "rollback"]
