"""The model pipeline's user-level operations, shared by the CLI and the GUI: datasets in, a
registered version out. Every check runs before the registry is touched; the version is stored in
one step at the end, so a failure or a cancel leaves the registry as it was."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from app.domain.errors import DataError
from app.ml import importer, pipeline, training
from app.ml.datasets import DatasetStore
from app.ml.registry import ModelVersion, Registry, check_name

log = logging.getLogger(__name__)


def load_features(store: DatasetStore, ids: list[str], label: str) -> tuple[np.ndarray, list[dict]]:
    """Feature rows of the datasets (each must carry `label`) and their provenance."""
    rows, info = [], []
    for ds_id in ids:
        ds = store.get(ds_id)
        if ds.label != label:
            other = "--fault-data" if ds.label == "fault" else "--data"
            raise DataError(f"dataset {ds.id} is labelled {ds.label!r}, not {label!r}; pass it with {other}")
        rows.append(store.features(ds))
        info.append({"id": ds.id, "fingerprint": ds.fingerprint, "windows": ds.windows, "source": ds.source})
    if not rows:
        return np.zeros((0, 0), np.float32), info
    return np.concatenate(rows), info


def source_devices(info: list[dict]) -> list[str]:
    """The device ids the datasets were recorded from (source "device:ID"), for the model card:
    which machines a version was trained on (issue 14: per-machine and fleet models)."""
    return sorted({i["source"].split(":", 1)[1] for i in info if str(i.get("source", "")).startswith("device:")})


@contextmanager
def _stores(datasets: DatasetStore | None, registry: Registry | None) -> Iterator[tuple[DatasetStore, Registry]]:
    """The caller's dataset store and registry, or ones opened here and closed on leaving."""
    own_store, own_reg = datasets is None, registry is None
    datasets = datasets or DatasetStore()
    registry = registry or Registry()
    try:
        yield datasets, registry
    finally:
        if own_store:
            datasets.close()
        if own_reg:
            registry.close()


def train_and_register(data: list[str], fault_data: list[str] | None, name: str, *,
                       config: training.TrainConfig = training.TrainConfig(), parent: str | None = None,
                       notes: str = "", progress: training.ProgressFn | None = None,
                       cancel: threading.Event | None = None, registry: Registry | None = None,
                       datasets: DatasetStore | None = None) -> ModelVersion:
    """Train a new version of `name` from normal datasets (fault datasets only for metrics)."""
    check_name(name)
    with _stores(datasets, registry) as (datasets, registry):
        normal, normal_info = load_features(datasets, list(data), "normal")
        fault, fault_info = load_features(datasets, list(fault_data or []), "fault")
        if parent is None:
            latest = registry.list(name)
            parent = latest[-1].ref if latest else None
        elif parent:
            parent = registry.resolve(parent).ref
        trained = pipeline.train_model(normal, name=name, fault=fault if len(fault) else None, config=config,
                                       progress=progress, cancel=cancel,
                                       provenance={"datasets": normal_info, "fault_datasets": fault_info,
                                                   "devices": source_devices(normal_info)})
        if cancel is not None and cancel.is_set():
            from app.domain.errors import Cancelled

            raise Cancelled("training cancelled")
        return registry.add(name=name, tflite=trained.tflite, card=trained.card, image=trained.image,
                            parent=parent, dataset=",".join(i["id"] for i in normal_info), notes=notes,
                            artifacts=trained.extra_artifacts)


def import_and_register(path: Path, name: str, *, data: list[str] | None = None, external: bool = False,
                        notes: str = "", registry: Registry | None = None,
                        datasets: DatasetStore | None = None,
                        progress: training.ProgressFn | None = None) -> ModelVersion:
    """Check, convert and calibrate a model file (see app.ml.importer) and store it as a version."""
    check_name(name)
    with _stores(datasets, registry) as (datasets, registry):
        normal = None
        info: list[dict] = []
        if data:
            normal, info = load_features(datasets, list(data), "normal")
        imported = importer.import_model(Path(path), normal=normal, external=external, progress=progress)
        latest = registry.list(name)
        return registry.add(name=name, tflite=imported.tflite, card={**imported.card, "datasets": info},
                            image=imported.image, parent=latest[-1].ref if latest else None,
                            dataset=",".join(i["id"] for i in info) or None, notes=notes,
                            artifacts=imported.extra_artifacts)
