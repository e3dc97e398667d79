"""Per-machine models (issue 14, item 2): one version per machine, each trained on its own
recording, in one batch (`tinymlops model train --per-device --device A --device B ...`).

Machines that differ in speed, load or mounting false-alarm on each other's models (the fit check
shows it); a family per machine, `<family>-<device>`, gives each its own version line, rollback
target and model card (which names the device it was trained on). All devices record at once
(one broker connection, their streams side by side), then each is trained and, when asked,
deployed to its own machine alone through the fit check. A fleet model instead is one version
trained on several machines' datasets: `model train --data A --data B`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass

from app.deploy import api
from app.deploy.adapt import (
    DEFAULT_RECORD_S,
    AdaptProgress,
    ProgressFn,
    check_record_length,
    wait_online,
    wait_stream,
)
from app.domain.errors import DataError, LinkError, TinyMLOpsError
from app.ml.features import DEFAULT_SPEC

log = logging.getLogger(__name__)

@dataclass
class MachineModel:
    """One machine of `train_per_device`: its dataset, its version, its deployment."""

    device: str
    model: str | None = None
    dataset: str | None = None
    windows: int = 0
    deploy_outcome: str | None = None  # None when not deployed (no --deploy, or an earlier failure)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        return asdict(self)


def per_device_family(family: str, device: str) -> str:
    """`<family>-<device>`: one family per machine, so each keeps its own version line."""
    return f"{family}-{device}"


def train_per_device(devices: list[str], family: str, *, seconds: float = DEFAULT_RECORD_S,
                     broker: str | None = None, deploy: bool = False, trial: bool = False, config=None,
                     progress: ProgressFn | None = None,
                     cancel: threading.Event | None = None) -> list[MachineModel]:
    """Record `seconds` of every device at once, then per device train and register
    `<family>-<device>` on its own recording and (with `deploy`) deploy it to that device alone,
    through the fit check. One MachineModel per device; a device's failure does not stop the others.
    Bad names, a bad length and an unreachable broker raise before anything is recorded."""
    from app.deploy.fit_check import FitGate
    from app.ml import training, workflows
    from app.ml.datasets import DatasetStore
    from app.ml.recording import StreamRecorder
    from app.ml.registry import check_name

    devices = list(dict.fromkeys(devices))
    if not devices:
        raise DataError("name at least one --device")
    for device in devices:
        check_name(per_device_family(family, device))
    check_record_length(seconds)
    config = config or training.TrainConfig()
    cancel = cancel or threading.Event()
    results = {d: MachineModel(d) for d in devices}

    def say(step: str, fraction: float, message: str) -> None:
        if progress is not None:
            progress(AdaptProgress(step, fraction, message))

    from app.deploy.links import broker_connection
    from app.services.fleet_monitor import FleetMonitor

    with broker_connection(broker) as conn, FleetMonitor(conn) as monitor:
        recorders: dict[str, StreamRecorder] = {}
        listeners = {}
        for device in devices:
            try:
                wait_online(monitor, device, cancel)
            except LinkError as exc:
                results[device].error = str(exc)
                continue
            recorder = StreamRecorder(seconds, progress=lambda _s, f, msg, d=device: say("record", f, f"{d}: {msg}"))
            recorders[device] = recorder
            listeners[device] = (lambda rec: lambda _d, msg: rec.feed(msg))(recorder)
            monitor.add_stream_listener(device, listeners[device])
        try:
            for device, recorder in recorders.items():  # they all record meanwhile
                try:
                    wait_stream(recorder, device, seconds, cancel)
                except TinyMLOpsError as exc:
                    results[device].error = str(exc)
        finally:
            for device, callback in listeners.items():
                monitor.remove_stream_listener(device, callback)
        with DatasetStore() as store:
            for device, recorder in recorders.items():
                if results[device].error is None:
                    ds = store.add(recorder.samples(), DEFAULT_SPEC.sample_rate, "normal", source=f"device:{device}",
                                   meta={"device": device, "stream_gaps": recorder.gaps, "transport": "mqtt",
                                         "recorded_by": "model train --per-device"})
                    results[device].dataset, results[device].windows = ds.id, ds.windows
        for device in devices:
            r = results[device]
            if r.error is not None:
                continue
            try:
                mv = workflows.train_and_register([r.dataset], None, per_device_family(family, device), config=config,
                                                  notes=f"per-device model of {device}", cancel=cancel,
                                                  progress=lambda stage, f, msg, d=device: say(stage, f, f"{d}: {msg}"))
                r.model = mv.ref
                if deploy:
                    [result] = api.deploy(mv.ref, [device], connection=conn, trial=trial, fit_gate=FitGate(
                        progress=lambda d, text: say("check", 0.0, f"{d}: {text}"), cancel=cancel))
                    r.deploy_outcome = result.outcome
                    if not result.ok:
                        r.error = f"deployment {result.outcome}: {result.error_message}"
            except TinyMLOpsError as exc:
                r.error = str(exc)
            log.info("per-device model of %s: %s", device, r.model if r.ok else r.error)
    return [results[d] for d in devices]
