"""Datasets: raw 3-axis recordings in g, stored under the data directory as `.npy`, with metadata
(label, source, sample rate, window count, content fingerprint) in the application's SQLite file.

A dataset's id comes from its fingerprint (SHA-256 of the sample rate and the float32 samples), so
importing the same recording twice gives the same dataset. Every check happens before anything is
written; the file is written atomically and removed again if the metadata insert fails.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import struct
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from app.domain import database, paths
from app.domain.errors import DataError
from app.ml import features as feat
from app.ml import store

log = logging.getLogger(__name__)

LABELS = ("normal", "fault")
# A dataset shorter than this cannot contribute a meaningful train/validation split.
MIN_DATASET_WINDOWS = 8
# Bigger CSV files are a mistake (wrong file) rather than a recording: ~1 h at 3.2 kHz.
MAX_SAMPLES = 3200 * 3600
# An accelerometer sample beyond this many g is a unit error (m/s^2 or raw counts), not vibration.
MAX_ABS_G = 200.0
DATASETS_SUBDIR = "datasets"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (
    id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL UNIQUE,
    label TEXT NOT NULL,
    source TEXT NOT NULL,
    sample_rate INTEGER NOT NULL,
    n_samples INTEGER NOT NULL,
    windows INTEGER NOT NULL,
    created REAL NOT NULL,
    notes TEXT NOT NULL DEFAULT '',
    meta TEXT NOT NULL DEFAULT '{}'
);
"""


@dataclass
class Dataset:
    id: str
    fingerprint: str
    label: str
    source: str
    sample_rate: int
    n_samples: int
    windows: int
    created: float
    notes: str = ""
    meta: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def fingerprint(samples: np.ndarray, sample_rate: int) -> str:
    """SHA-256 over the rate (u32 LE) and the samples as little-endian float32, row-major."""
    data = np.ascontiguousarray(np.asarray(samples, "<f4"))
    return store.sha256_hex(struct.pack("<I", int(sample_rate)) + data.tobytes())


def check_samples(samples: np.ndarray, sample_rate: int, spec: feat.FeatureSpec = feat.DEFAULT_SPEC,
                  what: str = "recording") -> np.ndarray:
    """The samples as float32 (n, 3), or DataError naming what is wrong."""
    if int(sample_rate) != spec.sample_rate:
        raise DataError(f"{what} is sampled at {sample_rate} Hz but feature spec {spec.spec_id} needs "
                        f"{spec.sample_rate} Hz (resample it, or record from a device at that rate)")
    arr = np.asarray(samples)
    if arr.ndim != 2 or arr.shape[1] != len(spec.axes):
        raise DataError(f"{what} must have {len(spec.axes)} columns (x, y, z in g), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{what} holds non-numeric values ({arr.dtype})")
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        bad = int(np.argmax(~np.all(np.isfinite(arr), axis=1)))
        raise DataError(f"{what} has a non-finite value (NaN or inf) at sample {bad}")
    if len(arr) > MAX_SAMPLES:
        raise DataError(f"{what} has {len(arr)} samples, more than the {MAX_SAMPLES} allowed")
    if len(arr) and float(np.max(np.abs(arr))) > MAX_ABS_G:
        raise DataError(f"{what} has values up to {float(np.max(np.abs(arr))):.1f}, beyond {MAX_ABS_G} g: "
                        "the columns must be acceleration in g (not m/s^2 or raw counts)")
    windows = 0 if len(arr) < spec.window else 1 + (len(arr) - spec.window) // spec.hop
    if windows < MIN_DATASET_WINDOWS:
        raise DataError(f"{what} gives {windows} windows of {spec.window} samples; a dataset needs at "
                        f"least {MIN_DATASET_WINDOWS} ({MIN_DATASET_WINDOWS * spec.window / spec.sample_rate:.1f} "
                        f"s at {spec.sample_rate} Hz)")
    return arr


def read_csv(path: Path) -> np.ndarray:
    """CSV with columns x, y, z in g, one row per sample, optional header row."""
    rows: list[list[float]] = []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            for lineno, row in enumerate(csv.reader(fh), start=1):
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != 3:
                    raise DataError(f"{path.name} line {lineno}: expected 3 columns x,y,z, got {len(row)}")
                try:
                    rows.append([float(c) for c in row])
                except ValueError:
                    if lineno == 1 and not rows:
                        continue  # header
                    raise DataError(f"{path.name} line {lineno}: not a number in {row!r}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path.name} is not a text CSV file") from None
    if not rows:
        raise DataError(f"{path.name} holds no samples")
    return np.asarray(rows, np.float64)


def read_npy(path: Path) -> np.ndarray:
    """`.npy` of shape (n, 3), acceleration in g."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path.name} is not a readable .npy array: {exc}") from None
    return arr


def read_file(path: Path) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise DataError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv(path)
    if suffix == ".npy":
        return read_npy(path)
    raise DataError(f"{path.name}: unsupported format {suffix!r} (use .csv with x,y,z columns or .npy (n, 3))")


class DatasetStore(database.Store):
    def __init__(self, db_path: Path | None = None, root: Path | None = None) -> None:
        super().__init__(db_path, _SCHEMA)
        self.root = Path(root) if root else paths.data_dir() / DATASETS_SUBDIR

    def _file(self, fp: str) -> Path:
        return self.root / f"{fp}.npy"

    @staticmethod
    def _row(row) -> Dataset:
        return Dataset(id=row["id"], fingerprint=row["fingerprint"], label=row["label"], source=row["source"],
                       sample_rate=row["sample_rate"], n_samples=row["n_samples"], windows=row["windows"],
                       created=row["created"], notes=row["notes"], meta=json.loads(row["meta"]))

    def list(self, label: str | None = None) -> list[Dataset]:
        if label:
            rows = self._conn.execute("SELECT * FROM datasets WHERE label=? ORDER BY created", (label,))
        else:
            rows = self._conn.execute("SELECT * FROM datasets ORDER BY created")
        return [self._row(r) for r in rows]

    def get(self, dataset_id: str) -> Dataset:
        row = self._conn.execute("SELECT * FROM datasets WHERE id=? OR fingerprint=?",
                                 (dataset_id, dataset_id)).fetchone()
        if row is None:
            raise DataError(f"no dataset {dataset_id!r} (see `tinymlops data list`)")
        return self._row(row)

    def add(self, samples: np.ndarray, sample_rate: int, label: str, source: str, notes: str = "",
            meta: dict | None = None, spec: feat.FeatureSpec = feat.DEFAULT_SPEC) -> Dataset:
        """Validate and store a recording; returns the existing dataset when the content is known."""
        if label not in LABELS:
            raise DataError(f"label must be one of {', '.join(LABELS)}, not {label!r}")
        arr = check_samples(samples, sample_rate, spec, what=source)
        fp = fingerprint(arr, sample_rate)
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        path = self._file(fp)
        windows = 1 + (len(arr) - spec.window) // spec.hop
        ds = Dataset(id=f"ds-{fp[:12]}", fingerprint=fp, label=label, source=source,
                     sample_rate=int(sample_rate), n_samples=len(arr), windows=windows, created=time.time(),
                     notes=notes, meta=meta or {})
        # check, write and insert under the database write lock: another process storing the same
        # recording at the same moment either sees our row or we see its row, and a failed insert
        # never removes a file someone else's committed row points at
        with database.transaction(self._conn):
            existing = self._conn.execute("SELECT * FROM datasets WHERE fingerprint=?", (fp,)).fetchone()
            if existing is not None:
                known = self._row(existing)
                if known.label != label:
                    raise DataError(f"this recording is already dataset {known.id} labelled {known.label!r}")
                log.info("recording already stored as %s", known.id)
                return known
            store.write_atomic(path, buf.getvalue())
            try:
                self._conn.execute(
                    "INSERT INTO datasets (id, fingerprint, label, source, sample_rate, n_samples, windows, "
                    "created, notes, meta) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (ds.id, fp, label, source, ds.sample_rate, ds.n_samples, windows, ds.created, notes,
                     json.dumps(ds.meta)))
            except BaseException:
                path.unlink(missing_ok=True)
                raise
        log.info("stored dataset %s: %d windows, label %s", ds.id, windows, label)
        return ds

    def import_file(self, path: Path, sample_rate: int, label: str, notes: str = "") -> Dataset:
        path = Path(path)
        return self.add(read_file(path), sample_rate, label, source=f"file:{path.name}", notes=notes)

    def samples(self, ds: Dataset | str) -> np.ndarray:
        ds = self.get(ds) if isinstance(ds, str) else ds
        try:
            arr = np.load(self._file(ds.fingerprint), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"dataset {ds.id}'s samples are missing or unreadable: {exc}") from None
        if fingerprint(arr, ds.sample_rate) != ds.fingerprint:
            raise DataError(f"dataset {ds.id}'s samples on disk do not match its fingerprint (corrupted)")
        return arr

    def features(self, ds: Dataset | str, spec: feat.FeatureSpec = feat.DEFAULT_SPEC) -> np.ndarray:
        """Feature rows of every window of the dataset."""
        return feat.extract_batch(feat.windows_from_recording(self.samples(ds), spec), spec)
