"""The GUI's worker jobs, Qt-free: each is `fn(progress, cancel, ...)` for app.ui.workers.

Training and import run in a separate process (`workers.run_in_process`): importing TensorFlow
and training hold the interpreter lock for long stretches that would otherwise stall the GUI's
event loop. Recording uses the session's live FleetMonitor, so it runs in a thread.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

# Training stages and the share of the progress bar each takes (the pipeline reports a fraction per stage).
STAGE_SPAN = {"train": (0, 70), "convert": (70, 85), "validate": (85, 100)}


def record_job(progress, cancel, monitor, device_id: str, seconds: float, label: str):
    """Record `seconds` of a device's stream through the session's FleetMonitor into a dataset."""
    from app.ml.datasets import DatasetStore
    from app.ml.features import DEFAULT_SPEC
    from app.ml.recording import new_recorder, record_stream

    recorder = new_recorder(seconds, progress=lambda _s, f, t: progress(int(f * 95), f"recording: {t}"))
    progress(0, f"recording {seconds:.0f} s from {device_id}")
    samples, meta = record_stream(monitor, device_id, recorder, cancel=cancel)
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
