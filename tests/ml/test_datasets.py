"""Datasets: import of CSV and NumPy recordings, fingerprints, and every bad recording (wrong
rate, too few windows, bad columns, not numbers, unit mistakes): a clear DataError and nothing
written. Plus the STREAM recorder that turns a device's stream into whole windows."""

from __future__ import annotations

import numpy as np
import pytest

from app.domain.errors import DataError
from app.ml.datasets import MIN_DATASET_WINDOWS, DatasetStore, fingerprint
from app.ml.recording import StreamRecorder
from app.protocol.messages import Stream

from .conftest import recording

SCALE = 16.0 / 32768.0


def state(data_dir) -> tuple[list, list]:
    with DatasetStore() as store:
        rows = [d.id for d in store.list()]
    files = sorted(p.name for p in (data_dir / "datasets").iterdir()) if (data_dir / "datasets").exists() else []
    return rows, files


def test_import_csv_with_and_without_header(data_dir, tmp_path):
    samples = recording(1, 3.0).astype(np.float64)
    with_header = tmp_path / "a.csv"
    np.savetxt(with_header, samples, delimiter=",", header="x,y,z", comments="", fmt="%.9g")
    without = tmp_path / "b.csv"
    np.savetxt(without, samples, delimiter=",", fmt="%.9g")
    with DatasetStore() as store:
        a = store.import_file(with_header, 3200, "normal")
        b = store.import_file(without, 3200, "normal")
        assert a.id == b.id, "same content, same fingerprint, one dataset"
        assert a.windows == 9 and a.sample_rate == 3200 and a.source == "file:a.csv"
        np.testing.assert_allclose(store.samples(a), samples, rtol=1e-6, atol=1e-9)
        assert store.features(a).shape == (9, 36)
        assert [d.id for d in store.list()] == [a.id]


def test_import_npy_and_fingerprint(data_dir, tmp_path):
    samples = recording(2, 4.0)
    path = tmp_path / "r.npy"
    np.save(path, samples)
    with DatasetStore() as store:
        ds = store.import_file(path, 3200, "fault")
        assert ds.fingerprint == fingerprint(samples, 3200) != fingerprint(samples, 1600)
        assert ds.id == f"ds-{ds.fingerprint[:12]}" and store.get(ds.id).label == "fault"
        with pytest.raises(DataError, match=r"already dataset .* labelled 'fault'"):
            store.import_file(path, 3200, "normal")


BAD = {
    "wrong rate": ("r.npy", lambda p: np.save(p, recording(3, 4.0)), 1600, "sampled at 1600 Hz"),
    "too few windows": ("r.npy", lambda p: np.save(p, recording(3, 1.0)), 3200, "gives 3 windows"),
    "two columns": ("r.csv", lambda p: p.write_text("1,2\n" * 9000), 3200, "expected 3 columns"),
    "not numbers": ("r.csv", lambda p: p.write_text("x,y,z\n" + "1,2,3\n" * 10 + "a,b,c\n"), 3200,
                    "line 12: not a number"),
    "npy wrong shape": ("r.npy", lambda p: np.save(p, np.zeros((9000, 2))), 3200, "must have 3 columns"),
    "nan": ("r.npy", lambda p: np.save(p, np.where(np.arange(27000).reshape(9000, 3) == 300, np.nan, 0.0)),
            3200, "non-finite value .* at sample 100"),
    "raw counts not g": ("r.npy", lambda p: np.save(p, np.round(recording(3, 4.0) / SCALE)), 3200,
                         "beyond 200.0 g"),
    "not an npy": ("r.npy", lambda p: p.write_bytes(b"garbage" * 100), 3200, "not a readable .npy"),
    "binary csv": ("r.csv", lambda p: p.write_bytes(bytes(range(256)) * 10), 3200, "not a text CSV"),
    "unsupported": ("r.wav", lambda p: p.write_bytes(b"RIFF"), 3200, "unsupported format"),
    "missing": ("missing.csv", lambda p: None, 3200, "no such file"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_recordings_are_refused_and_nothing_is_written(data_dir, tmp_path, case):
    name, make, rate, message = BAD[case]
    path = tmp_path / name
    make(path)
    before = state(data_dir)
    with DatasetStore() as store, pytest.raises(DataError, match=message):
        store.import_file(path, rate, "normal")
    assert state(data_dir) == before


def test_bad_label_and_unknown_id(data_dir):
    with DatasetStore() as store:
        with pytest.raises(DataError, match="label must be one of"):
            store.add(recording(4, 4.0), 3200, "broken", source="test")
        with pytest.raises(DataError, match="no dataset 'ds-nope'"):
            store.get("ds-nope")


def test_failed_metadata_insert_removes_the_file(data_dir):
    with DatasetStore() as store:
        store._conn.execute("CREATE TRIGGER fail BEFORE INSERT ON datasets BEGIN SELECT RAISE(ABORT, 'x'); END")
        with pytest.raises(Exception, match="x"):
            store.add(recording(5, 4.0), 3200, "normal", source="test")
    assert state(data_dir) == ([], [])


def test_corrupted_samples_file_is_detected(data_dir):
    with DatasetStore() as store:
        ds = store.add(recording(6, 4.0), 3200, "normal", source="test")
        path = data_dir / "datasets" / f"{ds.fingerprint}.npy"
        arr = np.load(path)
        arr[10, 0] += 1.0
        np.save(path, arr)
        with pytest.raises(DataError, match="do not match its fingerprint"):
            store.samples(ds)


def stream_messages(samples: np.ndarray, first_seq: int = 1, rate: int = 3200):
    q = np.clip(np.round(samples / SCALE), -32768, 32767).astype(np.int16)
    return [Stream(first_seq + i, rate, SCALE, q[i * 256:(i + 1) * 256]) for i in range(len(q) // 256)]


def test_recorder_keeps_whole_contiguous_windows():
    samples = recording(7, 2.0)
    msgs = stream_messages(samples)
    progress = []
    rec = StreamRecorder(seconds=1.0, progress=lambda *a: progress.append(a))
    assert rec.windows == 4
    lost = 5  # message 5 never arrives: window 2 (messages 4..7) has a hole and is dropped
    for i, msg in enumerate(msgs):
        if i != lost:
            rec.feed(msg)
    assert rec.done and rec.gaps == 1
    out = rec.samples()
    assert out.shape == (4 * 1024, 3)
    q = np.round(samples / SCALE) * SCALE
    np.testing.assert_allclose(out[:1024], q[:1024], atol=1e-6)  # window 0: messages 0..3
    np.testing.assert_allclose(out[1024:2048], q[6 * 256:6 * 256 + 1024], atol=1e-6)  # restarts after the gap
    assert progress[-1][1] == pytest.approx(1.0)


def test_recorder_refuses_wrong_rate():
    rec = StreamRecorder(seconds=1.0)
    rec.feed(stream_messages(recording(8, 0.2), rate=1600)[0])
    assert rec.done
    with pytest.raises(DataError, match="streams at 1600 Hz"):
        rec.samples()


def test_min_windows_constant_matches_message(data_dir):
    seconds = (MIN_DATASET_WINDOWS - 1) * 1024 / 3200
    with DatasetStore() as store, pytest.raises(DataError, match=f"at least {MIN_DATASET_WINDOWS}"):
        store.add(recording(9, seconds), 3200, "normal", source="test")
