"""Telemetry history ingest: rows per second through TelemetryHistory (queue -> background writer
-> batched transactions with per-minute roll-ups) against, in the same run, a bare sqlite3
`executemany` of the same rows into the same table in one transaction (the ceiling) and a commit
per message (what the writer thread avoids); then bytes per device-day on disk and the projection
for 1,000 devices over a year with the default retentions.

    python benchmarks/history_ingest.py [--devices 100] [--seconds 600]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.ml.features import DEFAULT_SPEC
from app.services import telemetry_history as th

# Rows for the commit-per-message reference: it is ~100x slower, a few thousand tell the story.
PER_COMMIT_ROWS = 3000
# One telemetry per device per second (PROTOCOL.md: about 1 Hz).
TELEMETRY_HZ = 1.0
SECONDS_PER_DAY = 86400


def make_rows(devices: int, seconds: int, start: float) -> list[th.TelemetryRow]:
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(devices * seconds, DEFAULT_SPEC.n_features)).astype(np.float32)
    rows = []
    for t in range(seconds):
        for d in range(devices):
            i = t * devices + d
            rows.append(th.TelemetryRow(f"sim-{d + 1:04d}", start + t, 1, float(abs(feats[i, 0])), 2.5, 24.0,
                                        tuple(feats[i].tolist()), bool(feats[i, 1] > 2.5)))
    return rows


def ours(path: Path, rows: list[th.TelemetryRow], now: float) -> tuple[float, float]:
    """(rows/s end to end, microseconds per record() call on the producer thread)."""
    with th.TelemetryHistory(path, clock=lambda: now) as hist:
        started = time.perf_counter()
        for row in rows:
            hist.record(row)
        queued = time.perf_counter()
        assert hist.flush(timeout=600), "writer did not finish"
        done = time.perf_counter()
        assert hist.dropped == 0
    return len(rows) / (done - started), (queued - started) / len(rows) * 1e6


def _bare_db(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(th._SCHEMA)
    return db


def _tuples(rows: list[th.TelemetryRow], keys: dict[str, int]) -> list[tuple]:
    return [(keys[r.device_id], r.ts, r.model_version, r.score, r.threshold, r.shaft_hz,
             np.asarray(r.features, "<f4").tobytes()) for r in rows]


def bare_executemany(path: Path, rows: list[th.TelemetryRow]) -> float:
    """The ceiling: the same rows (already device keys), one executemany, one transaction."""
    db = _bare_db(path)
    keys = {d: i for i, d in enumerate(sorted({r.device_id for r in rows}), 1)}
    started = time.perf_counter()
    tuples = _tuples(rows, keys)
    db.execute("BEGIN")
    db.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?, ?)", tuples)
    db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return len(rows) / elapsed


def commit_per_message(path: Path, rows: list[th.TelemetryRow]) -> float:
    db = _bare_db(path)
    keys = {d: i for i, d in enumerate(sorted({r.device_id for r in rows}), 1)}
    started = time.perf_counter()
    for t in _tuples(rows, keys):
        db.execute("INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?, ?)", t)  # autocommit: one transaction each
    elapsed = time.perf_counter() - started
    db.close()
    return len(rows) / elapsed


def table_bytes(path: Path) -> dict[str, int]:
    """Bytes on disk per table (its B-tree pages), after a WAL checkpoint."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    try:
        sizes = dict(db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"))
    except sqlite3.OperationalError:  # SQLite built without dbstat: split the file by row counts
        total = path.stat().st_size
        n_samples = db.execute("SELECT count(*) FROM samples").fetchone()[0]
        n_rollups = db.execute("SELECT count(*) FROM rollups").fetchone()[0]
        sizes = {"samples": total * n_samples // max(1, n_samples + n_rollups),
                 "rollups": total * n_rollups // max(1, n_samples + n_rollups)}
    db.close()
    return sizes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=600, help="seconds of telemetry per device")
    args = parser.parse_args()
    start = 1_700_000_000.0
    rows = make_rows(args.devices, args.seconds, start)
    now = start + args.seconds
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        ours_rate, record_us = ours(tmp_path / "ours.sqlite3", rows, now)
        bare_rate = bare_executemany(tmp_path / "bare.sqlite3", rows)
        per_commit = commit_per_message(tmp_path / "commit.sqlite3", rows[:PER_COMMIT_ROWS])
        sizes = table_bytes(tmp_path / "ours.sqlite3")
    print(f"{len(rows)} telemetry rows ({args.devices} devices x {args.seconds} s, "
          f"{DEFAULT_SPEC.n_features} float32 features each)")
    print(f"{'writer':<44} {'rows/s':>10} {'vs bare':>8}")
    for name, rate in (("TelemetryHistory (queue, batches, roll-ups)", ours_rate),
                       ("bare sqlite3 executemany, one transaction", bare_rate),
                       (f"commit per message ({PER_COMMIT_ROWS} rows)", per_commit)):
        print(f"{name:<44} {rate:>10,.0f} {rate / bare_rate:>7.2f}x")
    print(f"record() on the producer (MQTT) thread: {record_us:.1f} us per message")
    per_row = sizes.get("samples", 0) / len(rows)
    minutes = args.devices * -(-args.seconds // th.ROLLUP_BUCKET_S)
    per_rollup = sizes.get("rollups", 0) / max(1, minutes)
    raw_day = per_row * TELEMETRY_HZ * SECONDS_PER_DAY
    rollup_day = per_rollup * SECONDS_PER_DAY / th.ROLLUP_BUCKET_S
    print(f"on disk: {per_row:.0f} B per telemetry row, {per_rollup:.0f} B per minute roll-up")
    print(f"per device-day: raw {raw_day / 1e6:.1f} MB, roll-ups {rollup_day / 1e3:.0f} KB")
    raw_days = th.RAW_RETENTION_S / SECONDS_PER_DAY
    rollup_days = min(365, th.ROLLUP_RETENTION_S / SECONDS_PER_DAY)
    hourly_days = min(365, th.HOURLY_RETENTION_S / SECONDS_PER_DAY)
    # every row for RAW_FULL_S, then one in RAW_THIN_EVERY_S until the raw retention
    full_days = th.RAW_FULL_S / SECONDS_PER_DAY
    raw_total = 1000 * raw_day * (full_days + (raw_days - full_days) / th.RAW_THIN_EVERY_S)
    rollup_total = 1000 * rollup_day * rollup_days
    # an hourly roll-up row is the size of a minute one, 60 times fewer
    hourly_total = 1000 * rollup_day / (th.HOURLY_BUCKET_S / th.ROLLUP_BUCKET_S) * hourly_days
    print(f"1,000 devices x 1 year: raw ({th.RAW_FULL_S / 3600:g} h whole, then 1 in {th.RAW_THIN_EVERY_S} s "
          f"to {raw_days:g} days) {raw_total / 1e9:.1f} GB steady, "
          f"minute roll-ups ({rollup_days:g} days) {rollup_total / 1e9:.1f} GB, hourly roll-ups "
          f"({hourly_days:g} days) {hourly_total / 1e9:.2f} GB: "
          f"{(raw_total + rollup_total + hourly_total) / 1e9:.1f} GB in all; "
          f"ingest needed {1000 * TELEMETRY_HZ:,.0f} rows/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
