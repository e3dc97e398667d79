"""Telemetry history: every device's recent feature vectors and scores, and per-minute score roll-ups.

Why: a model is only as good as its fit to the machine it runs on. The fit check
(app.deploy.fit_check) scores a candidate on a machine's own recent normal behaviour, which is the
feature vectors the device already sends in each TELEMETRY (PROTOCOL.md 4.3). Every one is kept for
`RAW_FULL_S` (an hour), then one in `RAW_THIN_EVERY_S` seconds until `RAW_RETENTION_S` (a day);
the score's per-minute min/mean/max and alarm count are kept for `ROLLUP_RETENTION_S` (14 days),
then folded into hourly roll-ups kept for `HOURLY_RETENTION_S` (a year) for the long-term view.
Disk for a 1,000-device plant in steady state (benchmarks/history_ingest.py prints it: 206 B a raw
row, 83 KB of minute roll-ups a device-day): ~0.7 GB of the last hour's rows, ~1.7 GB of thinned
rows, ~1.2 GB of minute and ~0.5 GB of hourly roll-ups: ~4 GB (was 124 GB with a week of raw rows).

Storage: its own SQLite file next to the registry (`paths.data_dir()/telemetry.sqlite3`), not the
app store: it is written all the time at fleet rate, and SQLite has one writer per file, so sharing
the registry's file would make a model registration or a deployment row wait behind telemetry
batches; it can also be deleted or moved to a bigger disk without touching models or history.

Writes: `record()` only appends to a bounded in-memory queue (it runs on the MQTT network thread);
a background thread commits what has arrived every `FLUSH_INTERVAL_S` (or sooner at
`BATCH_MAX_ROWS`) in one transaction with executemany, and prunes old rows every `PRUNE_INTERVAL_S`.

A file that cannot be written (locked by another process past the busy timeout, a full disk, a
directory that cannot be created) never stops ingest or the live view: the writer says so once in
the log (not per row or per retry), keeps the rows in the bounded queue (the oldest dropped, counted
and logged, only when QUEUE_MAX_ROWS is reached), retries every flush interval, and logs once more
when the file is writable again with how many rows were delayed and lost. The file may even be
unwritable when the history is opened: the writer opens it when it can.
"""

from __future__ import annotations

import logging
import sqlite3
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.domain import paths

log = logging.getLogger(__name__)

# Raw feature vectors are kept this long: a day covers a daily duty cycle (`adapt --hours 24`), and
# the fit check reads the last 30 min; a week was 124 GB for 1,000 devices (17.8 MB a device-day).
RAW_RETENTION_S = 24 * 3600.0
# Every raw row is kept this long (the fit check reads the last 30 min, drift the last hour); older ones
# are thinned to one in RAW_THIN_EVERY_S seconds for the rest of RAW_RETENTION_S: a day of a machine's
# duty cycle stays (8,640 windows a device, plenty for `adapt --hours 24`) at a tenth of the disk.
RAW_FULL_S = 3600.0
RAW_THIN_EVERY_S = 10
# Per-minute score roll-ups are kept this long (~83 KB per device-day): the trend's hours-to-weeks view.
ROLLUP_RETENTION_S = 14 * 24 * 3600.0
# Minute roll-ups older than ROLLUP_RETENTION_S are folded into hourly ones kept this long
# (~1.4 KB per device-day): a year of trend.
HOURLY_RETENTION_S = 365 * 24 * 3600.0
# Hourly roll-up bucket, seconds.
HOURLY_BUCKET_S = 3600
# The writer commits what has queued at least this often: one transaction a second amortises
# SQLite's per-commit fsync over a whole fleet's telemetry (one message per device per second).
FLUSH_INTERVAL_S = 1.0
# ... or as soon as this many rows are waiting (a large fleet), to keep each transaction short.
BATCH_MAX_ROWS = 5000
# Rows waiting beyond this are dropped, oldest first, and counted: a stalled disk must not grow the
# process without bound (at 1,000 devices this is ~100 s of telemetry).
QUEUE_MAX_ROWS = 100_000
# Old rows are deleted this often: pruning per batch would cost an index range scan per second.
PRUNE_INTERVAL_S = 600.0
# A prune that failed (the file locked or full) is tried again after this long, not at every batch.
PRUNE_RETRY_S = 60.0
# Roll-up bucket, seconds.
ROLLUP_BUCKET_S = 60
# SQLite waits this long for a lock held by a reader in another process before giving up.
BUSY_TIMEOUT_S = 10.0
# The writer's page cache, KiB (SQLite's default is 2 MB): each batch appends to every device's own
# newest leaf page of `samples`; kept in memory between batches they are not read back each second
# (measured: 15-25 % less writer CPU per row with 200 devices).
WRITER_CACHE_KIB = 16384

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (id INTEGER PRIMARY KEY, device_id TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS samples (
    device INTEGER NOT NULL, ts REAL NOT NULL, model_version INTEGER NOT NULL, score REAL,
    threshold REAL, shaft_hz REAL, features BLOB NOT NULL, PRIMARY KEY (device, ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollups (
    device INTEGER NOT NULL, minute INTEGER NOT NULL, n INTEGER NOT NULL, score_min REAL,
    score_sum REAL NOT NULL, score_max REAL, scored INTEGER NOT NULL, alarms INTEGER NOT NULL,
    PRIMARY KEY (device, minute)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hourly (
    device INTEGER NOT NULL, hour INTEGER NOT NULL, n INTEGER NOT NULL, score_min REAL,
    score_sum REAL NOT NULL, score_max REAL, scored INTEGER NOT NULL, alarms INTEGER NOT NULL,
    PRIMARY KEY (device, hour)
) WITHOUT ROWID;
"""

# Adds a roll-up row onto the one already stored for its key (a bucket written in several batches):
# counts and sums add, min/max keep the extreme of the non-NULL ones.
_MERGE_SET = """
    n = n + excluded.n,
    score_min = CASE WHEN score_min IS NULL THEN excluded.score_min
                     WHEN excluded.score_min IS NULL THEN score_min
                     ELSE min(score_min, excluded.score_min) END,
    score_sum = score_sum + excluded.score_sum,
    score_max = CASE WHEN score_max IS NULL THEN excluded.score_max
                     WHEN excluded.score_max IS NULL THEN score_max
                     ELSE max(score_max, excluded.score_max) END,
    scored = scored + excluded.scored,
    alarms = alarms + excluded.alarms"""

# Minute roll-ups before a cutoff, folded into their hours (added to an hour already partly folded).
_FOLD_HOURLY = f"""
INSERT INTO hourly (device, hour, n, score_min, score_sum, score_max, scored, alarms)
SELECT device, minute * {ROLLUP_BUCKET_S} / {HOURLY_BUCKET_S}, sum(n), min(score_min), sum(score_sum),
       max(score_max), sum(scored), sum(alarms)
FROM rollups WHERE minute < ? GROUP BY device, minute * {ROLLUP_BUCKET_S} / {HOURLY_BUCKET_S}
ON CONFLICT (device, hour) DO UPDATE SET {_MERGE_SET}
"""

_UPSERT_ROLLUP = f"""
INSERT INTO rollups (device, minute, n, score_min, score_sum, score_max, scored, alarms)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (device, minute) DO UPDATE SET {_MERGE_SET}
"""


def history_path() -> Path:
    return paths.data_dir() / "telemetry.sqlite3"


@dataclass(frozen=True)
class TelemetryRow:
    """One telemetry message as stored: `score` None when the device ran no model."""

    device_id: str
    ts: float
    model_version: int
    score: float | None
    threshold: float | None
    shaft_hz: float | None
    features: tuple[float, ...]
    alarm: bool = False


@dataclass(frozen=True)
class FeatureHistory:
    """A device's stored windows, oldest first: features (n, n_features) float32 and their metadata."""

    device_id: str
    ts: np.ndarray
    features: np.ndarray
    scores: np.ndarray  # NaN where the device ran no model
    model_versions: np.ndarray

    def __len__(self) -> int:
        return len(self.ts)


@dataclass(frozen=True)
class Rollup:
    minute_ts: float  # start of the minute, epoch seconds
    n: int
    score_min: float | None
    score_mean: float | None
    score_max: float | None
    alarms: int


class TelemetryHistory:
    """The history database and its writer thread; `listener` plugs into FleetMonitor.add_listener.
    Thread-safe; `close()` (or `with`) commits what is queued and stops the writer."""

    def __init__(self, path: Path | None = None, *, raw_retention_s: float = RAW_RETENTION_S,
                 raw_full_s: float = RAW_FULL_S,
                 rollup_retention_s: float = ROLLUP_RETENTION_S, hourly_retention_s: float = HOURLY_RETENTION_S,
                 flush_interval_s: float = FLUSH_INTERVAL_S, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path) if path is not None else history_path()
        self.raw_retention_s = float(raw_retention_s)
        self.raw_full_s = float(raw_full_s)
        self.rollup_retention_s = float(rollup_retention_s)
        self.hourly_retention_s = float(hourly_retention_s)
        self.flush_interval_s = float(flush_interval_s)
        self._clock = clock
        self.dropped = 0  # rows lost to a full queue
        self.written = 0
        self.write_errors = 0  # batches that could not be written (and were queued again)
        self._queue: deque[TelemetryRow] = deque()
        # record() takes the condition's lock itself: a C-level acquire, where `with self._cond`
        # goes through Python code, and record() runs once per message on the transport thread
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._stop = False
        self._pending_flush = 0  # flush() calls waiting for the writer
        self._queued_seq = 0  # rows ever queued (FIFO sequence numbers)
        self._committed_seq = 0  # sequence number of the last row committed (or dropped before it)
        self._outage_since: float | None = None  # monotonic time the file stopped taking writes
        self._outage_dropped = 0  # self.dropped at the last write before the outage
        self._dropped_at_write = 0  # self.dropped at the last successful write
        self._db: sqlite3.Connection | None = None
        self._device_ids: dict[str, int] = {}
        try:
            self._open()
        except (sqlite3.Error, OSError) as exc:  # the writer opens it when it can
            self._note_outage(exc, 0)
        self._last_prune = 0.0
        self._thread = threading.Thread(target=self._run, name="telemetry-history", daemon=True)
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")  # readers (a fit check in another process) never block the writer
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a power cut loses at most the last batch
            db.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")  # negative: KiB, not pages
            db.executescript(_SCHEMA)
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _open(self) -> sqlite3.Connection:
        """The writer's connection, opened (schema and device ids read) on first need."""
        if self._db is None:
            db = self._connect()
            try:
                ids = dict((name, rid) for rid, name in db.execute("SELECT id, device_id FROM devices"))
            except sqlite3.Error:
                db.close()
                raise
            self._db, self._device_ids = db, ids
        return self._db

    def _note_outage(self, exc: BaseException, rows: int) -> None:
        """Said once per outage (the writer retries every flush interval; a log line per retry would
        bury everything else)."""
        self.write_errors += 1
        if self._outage_since is None:
            self._outage_since, self._outage_dropped = time.monotonic(), self._dropped_at_write
            log.warning("telemetry history: cannot write to %s (%s); live telemetry goes on, up to %d rows are "
                        "kept in memory and written when the file is writable again", self.path, exc, QUEUE_MAX_ROWS)
        else:
            log.debug("telemetry history: still cannot write %d rows (%s)", rows, exc)

    def _note_recovered(self) -> None:
        self._dropped_at_write = self.dropped
        if self._outage_since is not None:
            lost = self.dropped - self._outage_dropped
            log.warning("telemetry history: %s writable again after %.0f s; delayed rows written, %d lost "
                        "(queue full)", self.path, time.monotonic() - self._outage_since, lost)
            self._outage_since = None

    @property
    def writable(self) -> bool:
        """False while the file does not take writes (rows wait in the queue)."""
        return self._outage_since is None

    # ------------------------------------------------------------------ writing

    def record(self, row: TelemetryRow) -> None:
        """Queue one telemetry row (cheap; safe on the transport thread)."""
        with self._lock:
            if self._stop:
                return
            if len(self._queue) >= QUEUE_MAX_ROWS:
                self._queue.popleft()
                self.dropped += 1
                if self.dropped == 1 or self.dropped % QUEUE_MAX_ROWS == 0:
                    log.warning("telemetry history: %d rows waiting for %s (the bound), oldest dropped: %d lost so "
                                "far", QUEUE_MAX_ROWS, self.path, self.dropped)
            self._queue.append(row)
            self._queued_seq += 1
            if len(self._queue) >= BATCH_MAX_ROWS:
                self._cond.notify_all()

    def listener(self, event: str, record) -> None:
        """FleetMonitor listener: stores each "telemetry" event's record (a DeviceRecord)."""
        if event != "telemetry" or not record.features:
            return
        self.record(TelemetryRow(record.device_id, record.last_seen or self._clock(), record.model_version,
                                 record.score, record.threshold, record.shaft_hz, tuple(record.features),
                                 bool(record.alarm)))

    def flush(self, timeout: float = 30.0) -> bool:
        """Block until everything queued before this call is committed; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._queued_seq
            self._pending_flush += 1
            self._cond.notify_all()
            try:
                while self._committed_seq < target and self._thread.is_alive():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(left)
                return self._committed_seq >= target
            finally:
                self._pending_flush -= 1

    def close(self) -> None:
        with self._cond:
            if self._stop:
                return
            self._stop = True
            self._cond.notify_all()
        self._thread.join()
        if self._db is not None:
            self._db.close()

    def __enter__(self) -> TelemetryHistory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._stop and not self._pending_flush and len(self._queue) < BATCH_MAX_ROWS:
                    self._cond.wait(self.flush_interval_s)
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), BATCH_MAX_ROWS))]
                batch_seq = self._queued_seq - len(self._queue)
                stopping = self._stop and not self._queue
            committed = batch_seq
            self._prune_when_due()
            try:
                if batch:
                    self._open()
                    self._write(batch)
                    self._note_recovered()
            except (sqlite3.Error, OSError) as exc:
                # locked by another process past the busy timeout, disk full...: keep the batch (in
                # front, within the queue's bound) and try again at the next interval
                self._note_outage(exc, len(batch))
                self._device_ids = {}  # ids inserted by the rolled-back transaction are gone
                with self._cond:
                    room = max(0, QUEUE_MAX_ROWS - len(self._queue))
                    kept = batch[len(batch) - room:] if room < len(batch) else batch
                    if len(kept) < len(batch):
                        self.dropped += len(batch) - len(kept)
                        log.warning("telemetry history: queue full while %s is not writable, oldest dropped: "
                                    "%d lost so far", self.path, self.dropped)
                    self._queue.extendleft(reversed(kept))
                    committed = self._committed_seq
                    if self._stop:  # closing: do not spin on a broken file
                        log.warning("telemetry history: %d rows not written at close", len(self._queue))
                        self._cond.notify_all()
                        return
                    self._cond.wait(self.flush_interval_s)  # not a tight loop while a flush() waits
                stopping = False
            with self._cond:
                self._committed_seq = committed
                self._cond.notify_all()
            if stopping:
                return

    def _prune_when_due(self) -> None:
        now = self._clock()
        if now - self._last_prune < PRUNE_INTERVAL_S or self._db is None:
            return
        try:
            self.prune(now)
            self._last_prune = now
        except sqlite3.Error as exc:  # the same outage as a write's: said once; tried again in PRUNE_RETRY_S
            self._last_prune = now - PRUNE_INTERVAL_S + PRUNE_RETRY_S
            self._note_outage(exc, 0)

    def _device_key(self, device_id: str) -> int:
        key = self._device_ids.get(device_id)
        if key is None:
            self._db.execute("INSERT OR IGNORE INTO devices (device_id) VALUES (?)", (device_id,))
            key = self._db.execute("SELECT id FROM devices WHERE device_id = ?", (device_id,)).fetchone()[0]
            self._device_ids[device_id] = key
        return key

    def _write(self, batch: list[TelemetryRow]) -> None:
        samples = []
        buckets: dict[tuple[int, int], list] = {}
        with self._db:  # one transaction per batch
            self._db.execute("BEGIN")
            for row in batch:
                key = self._device_key(row.device_id)
                samples.append((key, row.ts, row.model_version, row.score, row.threshold, row.shaft_hz,
                                _features_blob(row.features)))
                agg = buckets.setdefault((key, int(row.ts // ROLLUP_BUCKET_S)), [0, None, 0.0, None, 0, 0])
                agg[0] += 1
                if row.score is not None:
                    agg[1] = row.score if agg[1] is None else min(agg[1], row.score)
                    agg[2] += row.score
                    agg[3] = row.score if agg[3] is None else max(agg[3], row.score)
                    agg[4] += 1
                agg[5] += int(row.alarm)
            # the same (device, ts) twice (a retained message seen again) keeps the first copy
            self._db.executemany("INSERT OR IGNORE INTO samples VALUES (?, ?, ?, ?, ?, ?, ?)", samples)
            self._db.executemany(_UPSERT_ROLLUP, [(d, m, n, lo, total, hi, scored, alarms) for (d, m),
                                                  (n, lo, total, hi, scored, alarms) in buckets.items()])
        self.written += len(batch)

    def prune(self, now: float | None = None) -> None:
        """Delete raw rows older than the raw retention; fold minute roll-ups older than theirs into
        hourly ones (one transaction: nothing is lost between the two), and drop hourly ones older
        than the hourly retention."""
        now = self._clock() if now is None else now
        cutoff = int((now - self.rollup_retention_s) // ROLLUP_BUCKET_S)
        # whole hours only: the hour the cutoff falls in is folded at a later prune, complete
        cutoff -= cutoff % (HOURLY_BUCKET_S // ROLLUP_BUCKET_S)
        db = self._open()
        with db:
            db.execute("BEGIN")
            db.execute("DELETE FROM samples WHERE ts < ?", (now - self.raw_retention_s,))
            # older than an hour: one row in RAW_THIN_EVERY_S seconds stays (whole seconds divisible by it)
            db.execute("DELETE FROM samples WHERE ts < ? AND CAST(ts AS INTEGER) % ? != 0",
                       (now - self.raw_full_s, RAW_THIN_EVERY_S))
            db.execute(_FOLD_HOURLY, (cutoff,))
            db.execute("DELETE FROM rollups WHERE minute < ?", (cutoff,))
            db.execute("DELETE FROM hourly WHERE hour < ?",
                             (int((now - self.hourly_retention_s) // HOURLY_BUCKET_S),))

    # ------------------------------------------------------------------ reading

    def devices(self) -> list[str]:
        """Devices with stored rows (committed ones)."""
        db = _reader(self.path)
        if db is None:
            return []
        try:
            return sorted(r[0] for r in db.execute("SELECT device_id FROM devices"))
        finally:
            db.close()

    def features(self, device_id: str, since_s: float, *, until: float | None = None,
                 limit: int | None = None) -> FeatureHistory:
        """The device's windows of the last `since_s` seconds (up to `until`), newest `limit` kept."""
        return read_features(self.path, device_id, since_s, until=until, limit=limit, now=self._clock())

    def rollups(self, device_id: str, since_s: float) -> list[Rollup]:
        return read_rollups(self.path, device_id, since_s, now=self._clock())


def _features_blob(features: tuple[float, ...]) -> bytes:
    """The stored form of a feature vector, little-endian float32: struct packs a tuple of floats
    several times faster than numpy builds an array of it; a value beyond float32's range (struct
    refuses it) goes through numpy, which stores it as +-inf."""
    try:
        return struct.pack(f"<{len(features)}f", *features)
    except (OverflowError, struct.error, TypeError):
        with np.errstate(over="ignore"):  # +-inf is the intended result, not a warning in the log
            return np.asarray(features, "<f4").tobytes()


def _reader(path: Path) -> sqlite3.Connection | None:
    if not Path(path).is_file():
        return None
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)


def read_features(path: Path | None, device_id: str, since_s: float, *, until: float | None = None,
                  limit: int | None = None, now: float | None = None) -> FeatureHistory:
    """A device's stored windows from the history file (read-only, any process); empty when none."""
    path = Path(path) if path is not None else history_path()
    now = time.time() if now is None else now
    until = now if until is None else until
    empty = FeatureHistory(device_id, np.zeros(0), np.zeros((0, 0), np.float32), np.zeros(0), np.zeros(0, int))
    db = _reader(path)
    if db is None:
        return empty
    try:
        query = ("SELECT s.ts, s.features, s.score, s.model_version FROM samples s JOIN devices d ON d.id = s.device "
                 "WHERE d.device_id = ? AND s.ts >= ? AND s.ts <= ? ORDER BY s.ts DESC")
        args: tuple = (device_id, until - since_s, until)
        if limit is not None:
            query += " LIMIT ?"
            args += (int(limit),)
        rows = db.execute(query, args).fetchall()[::-1]
    except sqlite3.OperationalError:  # a file without our tables yet
        return empty
    finally:
        db.close()
    if not rows:
        return empty
    widths = {len(r[1]) for r in rows}
    if len(widths) != 1:  # a device whose feature spec changed: keep the current (newest) layout
        newest = len(rows[-1][1])
        rows = [r for r in rows if len(r[1]) == newest]
    return FeatureHistory(
        device_id,
        np.array([r[0] for r in rows], np.float64),
        np.stack([np.frombuffer(r[1], "<f4") for r in rows]).astype(np.float32),
        np.array([np.nan if r[2] is None else r[2] for r in rows], np.float64),
        np.array([r[3] for r in rows], np.int64),
    )


def read_scores(path: Path | None, device_id: str, since_s: float, *,
                now: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A device's stored scores (NaN: no model ran) and their model versions of the last `since_s`
    seconds, oldest first, without the feature vectors: the drift check reads every device's hour,
    and the features are ~150 of a row's ~200 bytes."""
    path = Path(path) if path is not None else history_path()
    now = time.time() if now is None else now
    db = _reader(path)
    if db is None:
        return np.zeros(0), np.zeros(0, np.int64)
    try:
        rows = db.execute("SELECT s.score, s.model_version FROM samples s JOIN devices d ON d.id = s.device "
                          "WHERE d.device_id = ? AND s.ts >= ? AND s.ts <= ? ORDER BY s.ts",
                          (device_id, now - since_s, now)).fetchall()
    except sqlite3.OperationalError:  # a file without our tables yet
        return np.zeros(0), np.zeros(0, np.int64)
    finally:
        db.close()
    return (np.array([np.nan if r[0] is None else r[0] for r in rows], np.float64),
            np.array([r[1] for r in rows], np.int64))


def read_current_models(path: Path | None) -> dict[str, tuple[int, float | None]]:
    """Each stored device's model as its newest telemetry reported it: id -> (version, threshold).

    Why: the fleet-wide drift check (app.analysis.drift.fleet_drift) judges every device against the
    model it runs now, also from the command line where no live monitor knows the thresholds."""
    path = Path(path) if path is not None else history_path()
    db = _reader(path)
    if db is None:
        return {}
    try:
        rows = db.execute(
            "SELECT d.device_id, s.model_version, s.threshold FROM devices d JOIN samples s ON s.device = d.id "
            "AND s.ts = (SELECT MAX(ts) FROM samples WHERE device = d.id) ORDER BY d.device_id").fetchall()
    except sqlite3.OperationalError:  # a file without our tables yet
        return {}
    finally:
        db.close()
    return {device: (int(version), threshold) for device, version, threshold in rows}


def read_hourly(path: Path | None, device_id: str, since_s: float, now: float | None = None) -> list[Rollup]:
    """The device's hourly roll-ups (minute roll-ups older than the minute retention, folded);
    `minute_ts` is the start of the hour."""
    return _read_buckets(path, "hourly", "hour", HOURLY_BUCKET_S, device_id, since_s, now)


def read_rollups(path: Path | None, device_id: str, since_s: float, now: float | None = None) -> list[Rollup]:
    """The device's per-minute roll-ups of the last `since_s` seconds, oldest first."""
    return _read_buckets(path, "rollups", "minute", ROLLUP_BUCKET_S, device_id, since_s, now)


def _read_buckets(path: Path | None, table: str, column: str, bucket_s: int, device_id: str, since_s: float,
                  now: float | None) -> list[Rollup]:
    """Roll-ups from `table` (keyed by `column`, buckets of `bucket_s` seconds); [] when the file
    or the table (a file written before it existed) is not there."""
    path = Path(path) if path is not None else history_path()
    now = time.time() if now is None else now
    db = _reader(path)
    if db is None:
        return []
    try:
        rows = db.execute(  # table and column are this module's names, never input
            f"SELECT t.{column}, t.n, t.score_min, t.score_sum, t.score_max, t.scored, t.alarms FROM {table} t "
            f"JOIN devices d ON d.id = t.device WHERE d.device_id = ? AND t.{column} >= ? ORDER BY t.{column}",
            (device_id, int((now - since_s) // bucket_s))).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()
    return [Rollup(bucket * bucket_s, n, lo, total / scored if scored else None, hi, alarms)
            for bucket, n, lo, total, hi, scored, alarms in rows]
