"""The GUI's worker jobs, Qt-free: each is `fn(progress, cancel, ...)` for app.ui.workers.

Training and import run in a separate process (`workers.run_in_process`): importing TensorFlow
and training hold the interpreter lock for long stretches that would otherwise stall the GUI's
event loop. Recording uses the session's live FleetMonitor, so it runs in a thread.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)

# Training stages and the share of the progress bar each takes (the pipeline reports a fraction per stage).
STAGE_SPAN = {"train": (0, 70), "convert": (70, 85), "validate": (85, 100)}
# A recording may take this factor of its nominal length (lost windows are replaced by later ones) ...
RECORD_TIME_FACTOR = 1.5
# ... plus this for the stream request to reach the device and the first windows to come back.
RECORD_GRACE_S = 10.0


def record_job(progress, cancel, monitor, device_id: str, seconds: float, label: str):
    """Record `seconds` of a device's stream through the session's FleetMonitor into a dataset."""
    from app.domain.errors import Cancelled, DataError, LinkError
    from app.ml.datasets import MIN_DATASET_WINDOWS, DatasetStore
    from app.ml.features import DEFAULT_SPEC
    from app.ml.recording import StreamRecorder

    recorder = StreamRecorder(seconds, progress=lambda _s, f, t: progress(int(f * 95), f"recording: {t}"))
    if recorder.windows < MIN_DATASET_WINDOWS:
        shortest = MIN_DATASET_WINDOWS * DEFAULT_SPEC.window / DEFAULT_SPEC.sample_rate
        raise DataError(f"{seconds:.1f} s gives {recorder.windows} windows; a dataset needs at least "
                        f"{MIN_DATASET_WINDOWS} ({shortest:.1f} s)")
    record = monitor.get(device_id)
    if record is None or not record.online:
        raise LinkError(f"device {device_id} is not online")
    progress(0, f"recording {seconds:.0f} s from {device_id}")

    def on_stream(_device, msg) -> None:
        recorder.feed(msg)

    monitor.add_stream_listener(device_id, on_stream)
    try:
        deadline = time.monotonic() + seconds * RECORD_TIME_FACTOR + RECORD_GRACE_S
        while not recorder.wait(0.1):
            if cancel.is_set():
                raise Cancelled("recording cancelled; nothing was stored")
            if time.monotonic() > deadline:
                raise LinkError(f"device {device_id} delivered {len(recorder.samples()) // DEFAULT_SPEC.window} "
                                f"of {recorder.windows} windows in time ({recorder.gaps} gaps)")
    finally:
        monitor.remove_stream_listener(device_id, on_stream)
    samples = recorder.samples()
    record = monitor.get(device_id) or record
    meta = {"device": device_id, "location": record.location, "profile": record.profile,
            "firmware": record.firmware, "model": f"{record.model_name}@{record.model_version}",
            "shaft_hz": record.shaft_hz, "stream_gaps": recorder.gaps}
    with DatasetStore() as store:
        ds = store.add(samples, DEFAULT_SPEC.sample_rate, label, source=f"device:{device_id}", meta=meta)
    progress(100, f"recorded {ds.windows} windows")
    return ds


def _stage_progress(progress):
    """The pipeline's (stage, fraction, message) reports as the worker's (percent, text)."""

    def report(stage: str, fraction: float, message: str = "") -> None:
        lo, hi = STAGE_SPAN.get(stage, (0, 100))
        progress(int(lo + (hi - lo) * max(0.0, min(1.0, fraction))), f"{stage}: {message}")

    return report


def train_job(progress, cancel, data: list[str], fault: list[str], name: str, epochs: int,
              hidden: tuple[int, ...] | None = None):
    """`hidden`: the encoder's layer sizes (TrainConfig's default when None)."""
    from app.ml import training, workflows

    config = training.TrainConfig(epochs=epochs) if hidden is None else \
        training.TrainConfig(epochs=epochs, hidden=tuple(hidden))
    return workflows.train_and_register(data, fault, name, config=config, progress=_stage_progress(progress),
                                        cancel=cancel)


def smoke_train_job(progress, cancel):
    """`gui --smoke-test`: the installation smoke test's tiny model (app.services.smoke), trained,
    converted and TFLM-checked through the GUI's worker path; nothing is stored. Returns plain data
    (it crosses back from the child process)."""
    from app.services import smoke

    return smoke.convert_small_model(progress=_stage_progress(progress), cancel=cancel)


def import_job(progress, cancel, path: str, name: str, data: list[str]):
    from app.ml import workflows

    progress(10, f"importing {Path(path).name}")
    return workflows.import_and_register(Path(path), name, data=data or None)


def check_job(progress, cancel, ref: str):
    from app.ml import validation
    from app.ml.registry import Registry

    progress(10, f"measuring {ref} with TFLM")
    with Registry() as reg:
        mv = reg.resolve(ref)
        checked = validation.validate(reg.tflite_bytes(mv), mv.image_size)
    return mv, checked.fit_dict(), checked.ops, checked.arena


def export_job(progress, cancel, ref: str, out_dir: str):
    from app.ml import export
    from app.ml.registry import Registry

    with Registry() as reg:
        mv = reg.resolve(ref)
        written = export.export_package(reg, mv, Path(out_dir))
        if mv.deployable:
            written.append(export.export_header(reg, mv, Path(out_dir)))
    return written


def count_serial_ports_job(progress, cancel) -> int:
    """The serial ports the OS lists, for the status bar (0 when udev/sysfs cannot be read)."""
    from app.transport.discovery import list_serial_ports

    try:
        return len(list_serial_ports())
    except Exception:  # a broken udev/sysfs must not break the status bar
        log.debug("serial port scan failed", exc_info=True)
        return 0
