"""The Models page's jobs, Qt-free: each is `fn(progress, cancel, ...)` for app.ui.workers.

Training and import run in a separate process (`workers.run_in_process`): importing TensorFlow
and training hold the interpreter lock for long stretches that would otherwise stall the GUI's
event loop. Recording uses the session's live FleetMonitor, so it runs in a thread.
"""

from __future__ import annotations

import time
from pathlib import Path

# Training stages and the share of the progress bar each takes (the pipeline reports a fraction per stage).
STAGE_SPAN = {"train": (0, 70), "convert": (70, 85), "validate": (85, 100)}
# `gui --smoke-test` trains one throw-away model through the GUI's worker path (a spawned child):
# the fewest windows training accepts, spread over a few simulated machines, and one epoch. It
# proves TensorFlow imports, trains and converts in a child of the (frozen) GUI, not model quality.
SMOKE_TRAIN_MACHINES = 4
SMOKE_TRAIN_EPOCHS = 1
SMOKE_TRAIN_SEED = 11
SMOKE_SHAFT_HZ = (15.0, 35.0)  # the range of shaft speeds of the simulated machines
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
    """Train, convert and TFLM-check a tiny model on simulated normal vibration; nothing is stored.
    Returns the converted model's sizes (plain data: it crosses back from the child process)."""
    import numpy as np

    from app.ml import factory, pipeline, training

    per_machine = -(-training.MIN_TRAINING_WINDOWS // SMOKE_TRAIN_MACHINES)  # ceil: at least the minimum
    normal = np.concatenate([factory.simulate(SMOKE_TRAIN_SEED + m, hz, per_machine)
                             for m, hz in enumerate(np.linspace(*SMOKE_SHAFT_HZ, SMOKE_TRAIN_MACHINES))])
    config = training.TrainConfig(epochs=SMOKE_TRAIN_EPOCHS, seed=SMOKE_TRAIN_SEED)
    trained = pipeline.train_model(normal, name="gui-smoke", config=config, progress=_stage_progress(progress),
                                   cancel=cancel)
    return {"windows": len(normal), "epochs": SMOKE_TRAIN_EPOCHS, "tflite_size": trained.card["tflite_size"],
            "image_size": trained.card["image_size"]}


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
    from app.ml import export, package
    from app.ml.registry import Registry

    with Registry() as reg:
        mv = reg.resolve(ref)
        written = package.export_with_artifacts(reg, mv, Path(out_dir))
        if mv.deployable:
            written.append(export.export_header(reg, mv, Path(out_dir)))
    return written
