"""Deployment API for people and CI/CD jobs: deploy, rollback, confirm, history.

    from app.deploy.api import deploy, rollback, confirm, history
    results = deploy("pump-ae@latest", ["sim-001", "sim-002"], via="mqtt", broker="mqtt://host:1883")
    for r in results:
        print(r.device, r.outcome, r.host_deploy_s, r.load_us, r.inference_median_us, r.error_message)

`deploy` accepts a registry reference (`NAME@VERSION`, `NAME@latest`), a `.tmlm` path or image
bytes. It refuses, before sending a byte, an image that is not a valid container or does not fit
a device's free slot. One device over MQTT is a push transfer; several (or a canary rollout) are
a pull rollout through the broker, which carries the model once. Every device gets one
DeploymentResult with the three latencies and the outcome, and one row in the history; errors
carry the device's code and its human text. Nothing here raises for a device's failure: a
failed device is a result with `ok = False` (connection failures before any device is reached
still raise LinkError, after recording a failed row per named device). A refused ROLLBACK or
CONFIRM is recorded too ("rollback-failed", "confirm-failed").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from app.deploy import links
from app.deploy.history import DeploymentHistory, DeploymentRecord
from app.deploy.rollout import DEFAULT_CONCURRENCY, Rollout, find_devices, not_online
from app.deploy.transfer import (
    DEFAULT_BENCH_COUNT,
    MQTT_WINDOW,
    WINDOW,
    PushTransfer,
    TransferStats,
    device_error,
    error_text,
)
from app.domain.errors import Cancelled, DeviceError, LinkError, ModelError, ProtocolError, TinyMLOpsError
from app.protocol.codes import PROTOCOL_VERSION, Caps, CommitMode, ErrorCode, LatencyFlags
from app.protocol.framing import line_bytes_per_s
from app.protocol.image import ModelImage, sha256
from app.protocol.messages import Confirm, Hello, Rollback
from app.transport.local_broker import resolve_broker
from app.transport.urls import parse_broker_url

log = logging.getLogger(__name__)

DeviceProgressFn = Callable[[str, int, int], None]
# ROLLBACK/CONFIRM reload a model on the device (load + self-test): longer than a plain query.
SWITCH_TIMEOUT_S = 30.0
# Largest bench count and trial timeout XFER_COMMIT can carry (u16 fields).
U16_MAX = 0xFFFF


@dataclass
class DeploymentResult:
    """One device's deployment outcome, with the paper's three latencies."""

    device: str
    outcome: str  # "ok", "failed", "refused", "cancelled", "skipped"
    model_name: str = ""
    model_version: int = 0
    model_sha: str = ""
    transport: str = ""
    image_size: int = 0
    wire_bytes: int = 0
    host_deploy_s: float | None = None
    device_deploy_us: int | None = None
    load_us: int | None = None
    bench_n: int | None = None
    inference_min_us: int | None = None
    inference_median_us: int | None = None
    inference_p95_us: int | None = None
    inference_max_us: int | None = None
    emulated: bool = False
    trial: bool = False
    resumed_chunks: int = 0
    retransmits: int = 0
    error_code: int | None = None
    error_message: str | None = None
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
class _Image:
    data: bytes
    name: str
    version: int

    @property
    def sha_hex(self) -> str:
        return sha256(self.data).hex()


def load_image(ref_or_image: str | Path | bytes, registry=None) -> _Image:
    """Image bytes from bytes, a `.tmlm` file or a registry reference; ModelError when unusable."""
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

            if registry is not None:
                data = registry.image_bytes(registry.resolve(text))
            else:
                with Registry() as reg:
                    data = reg.image_bytes(reg.resolve(text))
    try:
        img = ModelImage.from_bytes(data)
    except ModelError as exc:
        raise ModelError(f"not a deployable model image: {exc}") from exc
    if img.selftest_input is None:
        raise ModelError("the model image has no self-test section; devices refuse to activate it")
    return _Image(data, img.name, img.version)


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


def _refusal(hello: Hello, image: _Image, device: str) -> DeviceError | None:
    """Up-front check on what the device advertised: an image that cannot fit, or a device that
    does not speak this protocol version, is never sent a byte (PROTOCOL.md 4.1 negotiation)."""
    if not hello.proto_min <= PROTOCOL_VERSION <= hello.proto_max:
        return DeviceError(f"device {device}: UNSUPPORTED_VERSION ({int(ErrorCode.UNSUPPORTED_VERSION)}): it speaks "
                           f"protocol {hello.proto_min}..{hello.proto_max}, this application {PROTOCOL_VERSION}",
                           code=ErrorCode.UNSUPPORTED_VERSION)
    if len(image.data) > hello.free_slot:
        return DeviceError(f"device {device}: TOO_LARGE ({int(ErrorCode.TOO_LARGE)}): "
                           f"{error_text(ErrorCode.TOO_LARGE)}: image {len(image.data)} bytes, free slot "
                           f"{hello.free_slot} bytes", code=ErrorCode.TOO_LARGE)
    return None


def deploy(ref_or_image: str | Path | bytes, devices: list[str] | str | None = None, *, via: str = "mqtt",
           broker: str | None = None, port: str | None = None, baud: int = links.DEFAULT_BAUD,
           trial: bool = False, trial_timeout_s: int = 0, bench_count: int = DEFAULT_BENCH_COUNT,
           canary: int = 0, canary_threshold: float = 1.0, concurrency: int = DEFAULT_CONCURRENCY,
           pull: bool | None = None, progress: DeviceProgressFn | None = None,
           cancel: threading.Event | None = None, registry=None, history: DeploymentHistory | None = None,
           connection=None) -> list[DeploymentResult]:
    """Deploy one model version to devices; one DeploymentResult per device (see module doc).

    `via="serial"` takes `port` (device path, pty or `socket://host:port`) and `baud`; `devices`
    is then optional (checked against the device's id when given). `via="mqtt"` takes `broker`
    (or an open `connection`). `pull` forces (True) or forbids (False) the broker-pull rollout.
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
            results = [_deploy_serial(image, devices[0] if devices else None, port, baud, mode, trial_timeout_s,
                                      bench_count, progress, cancel)]
        elif connection is not None:
            results = _deploy_mqtt(connection, broker, image, devices, mode, trial_timeout_s, bench_count, canary,
                                   canary_threshold, concurrency, pull, progress, cancel)
        else:
            with links.broker_connection(broker) as conn:
                results = _deploy_mqtt(conn, resolve_broker(broker), image, devices, mode,
                                       trial_timeout_s, bench_count, canary, canary_threshold, concurrency,
                                       pull, progress, cancel)
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


def _record(hist: DeploymentHistory, results: list[DeploymentResult], started: float, via: str,
            broker: str | None, port: str | None, baud: int) -> None:
    """One history row per device result (its record_id is set)."""
    for r in results:
        rec = DeploymentRecord(
            started=started, device=r.device, model_name=r.model_name, model_version=r.model_version,
            model_sha=r.model_sha, transport=r.transport, baud=baud if via == "serial" else None,
            broker=_public_broker(broker) if via == "mqtt" else None, port=port if via == "serial" else None,
            image_size=r.image_size, wire_bytes=r.wire_bytes, host_deploy_s=r.host_deploy_s,
            device_deploy_us=r.device_deploy_us, load_us=r.load_us, bench_n=r.bench_n,
            inference_min_us=r.inference_min_us, inference_median_us=r.inference_median_us,
            inference_p95_us=r.inference_p95_us, inference_max_us=r.inference_max_us, emulated=r.emulated,
            trial=r.trial, outcome=r.outcome, error_code=r.error_code, error_message=r.error_message)
        r.record_id = hist.add(rec)


def _public_broker(broker: str | None) -> str:
    """The broker as the history shows it: never its password (the history is exported and shared)."""
    try:
        return str(parse_broker_url(resolve_broker(broker)))
    except LinkError:
        return "(invalid broker URL)"


def _base(image: _Image, device: str, transport: str, trial: bool) -> DeploymentResult:
    return DeploymentResult(device=device, outcome="failed", model_name=image.name, model_version=image.version,
                            model_sha=image.sha_hex, transport=transport, image_size=len(image.data), trial=trial)


def _push(link: links.DeviceLink, image: _Image, base: DeploymentResult,
          mode: CommitMode, trial_timeout_s: int, bench_count: int, progress: DeviceProgressFn | None,
          cancel: threading.Event) -> DeploymentResult:
    hello = link.hello
    refusal = _refusal(hello, image, base.device)
    if refusal is not None:
        return _fail(base, refusal, "refused")
    if not hello.caps & Caps.PUSH_XFER:
        return _fail(base, LinkError(f"device {base.device} does not take pushed transfers"), "refused")
    if mode == CommitMode.TRIAL and not hello.caps & Caps.TRIAL:
        return _fail(base, LinkError(f"device {base.device} cannot activate on trial"), "refused")
    serial = link.transport == "serial"
    push = PushTransfer(
        link.channel, image.data, device_id=base.device, model_name=image.name, model_version=image.version,
        max_chunk=hello.max_chunk, framed=serial, window=WINDOW if serial else MQTT_WINDOW,
        line_bytes_per_s=line_bytes_per_s(link.baud) if serial and link.baud else None,
        reconnect=link.reconnect, cancel=cancel,
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


def _deploy_serial(image: _Image, device: str | None, port: str, baud: int, mode: CommitMode,
                   trial_timeout_s: int, bench_count: int, progress, cancel) -> DeploymentResult:
    with links.serial_device(port, baud, device) as link:
        base = _base(image, link.hello.device_id, "serial", mode == CommitMode.TRIAL)
        return _push(link, image, base, mode, trial_timeout_s, bench_count, progress, cancel)


def _deploy_mqtt(conn, broker: str | None, image: _Image, devices: list[str], mode: CommitMode,
                 trial_timeout_s: int, bench_count: int, canary: int, canary_threshold: float,
                 concurrency: int, pull: bool | None, progress, cancel) -> list[DeploymentResult]:
    trial = mode == CommitMode.TRIAL
    use_pull = pull if pull is not None else (len(devices) > 1 or canary > 0)
    if not use_pull:
        base = _base(image, devices[0], "mqtt-push", trial)
        try:
            with links.mqtt_device(conn, devices[0], broker) as link:
                return [_push(link, image, base, mode, trial_timeout_s, bench_count, progress, cancel)]
        except TinyMLOpsError as exc:
            return [_fail(base, exc)]
    hellos = find_devices(conn, devices)
    results: dict[str, DeploymentResult] = {}
    targets: dict[str, Hello] = {}
    for d in devices:
        base = _base(image, d, "mqtt-pull", trial)
        hello = hellos.get(d)
        if hello is None:
            results[d] = _fail(base, LinkError(not_online(conn, d, broker)))
            continue
        refusal = _refusal(hello, image, d)
        if refusal is not None:
            results[d] = _fail(base, refusal, "refused")
        elif not hello.caps & Caps.PULL_XFER:
            results[d] = _fail(base, LinkError(f"device {d} cannot fetch from the broker (no PULL_XFER)"), "refused")
        else:
            results[d] = base
            targets[d] = hello
    if targets:
        report = Rollout(conn, image.data, targets, model_name=image.name, model_version=image.version,
                         concurrency=concurrency, canary=canary, canary_threshold=canary_threshold, mode=mode,
                         trial_timeout_s=trial_timeout_s, bench_count=bench_count, progress=progress,
                         cancel=cancel).run()
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
            baud: int, history: DeploymentHistory | None, connection=None) -> SwitchResult:
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

    if via == "serial":
        if not port:
            raise LinkError("--port is required over serial")
        with links.serial_device(port, baud, device) as link:
            return run(link)
    if via != "mqtt":
        raise LinkError(f"unknown transport {via!r}: use 'serial' or 'mqtt'")
    if not device:
        raise LinkError("name the --device")
    if connection is not None:
        with links.mqtt_device(connection, device, broker) as link:
            return run(link)
    with links.broker_connection(broker) as conn, links.mqtt_device(conn, device, broker) as link:
        return run(link)


def rollback(device: str | None = None, *, via: str = "mqtt", broker: str | None = None, port: str | None = None,
             baud: int = links.DEFAULT_BAUD, history: DeploymentHistory | None = None,
             connection=None) -> SwitchResult:
    """Make the device's previous model active again (error NO_PREVIOUS when there is none)."""
    return _switch(Rollback(), "rolled-back", device, via, broker, port, baud, history, connection)


def confirm(device: str | None = None, *, via: str = "mqtt", broker: str | None = None, port: str | None = None,
            baud: int = links.DEFAULT_BAUD, history: DeploymentHistory | None = None,
            connection=None) -> SwitchResult:
    """Make the model on trial permanent (error NOT_TRIAL when none is on trial)."""
    return _switch(Confirm(), "confirmed", device, via, broker, port, baud, history, connection)


def history(device: str | None = None, limit: int | None = None,
            store: DeploymentHistory | None = None) -> list[DeploymentRecord]:
    """Recorded deployments, newest first."""
    return (store or DeploymentHistory()).list(device=device, limit=limit)


__all__ = ["DeploymentResult", "SwitchResult", "confirm", "deploy", "history", "load_image",
           "rollback"]
