"""Telemetry-history retention: raw rows for a day, minute roll-ups for 30 days folded into hourly
ones kept a year (README "Telemetry history"); the trend reads both."""

from __future__ import annotations

from app.analysis import drift
from app.services import telemetry_history as th
from app.services.telemetry_history import TelemetryHistory, TelemetryRow

DAY = 86400.0


def _row(ts: float, score: float, alarm: bool = False) -> TelemetryRow:
    return TelemetryRow("sim-001", ts, 1, score, 2.0, 24.0, (0.1,) * 36, alarm)


def test_defaults_bound_a_plant_of_1000_devices():
    """The retention decision: every raw row for an hour, one in ten seconds for the rest of a day
    (17.8 MB a device-day measured, whole), 14 days of minute roll-ups, a year of hourly ones: ~4 GB
    for 1,000 devices (benchmarks/history_ingest.py)."""
    assert th.RAW_FULL_S == 3600 and th.RAW_THIN_EVERY_S == 10 and th.RAW_RETENTION_S == DAY
    assert th.ROLLUP_RETENTION_S == 14 * DAY and th.HOURLY_RETENTION_S == 365 * DAY


def test_raw_rows_older_than_an_hour_are_thinned_and_the_last_hour_is_whole(tmp_path):
    """The fit check reads the last 30 min and drift the last hour: every window; a day's duty cycle
    for `adapt --hours 24` keeps one window in ten seconds; past a day, none."""
    import sqlite3

    path = tmp_path / "h.sqlite3"
    now = 400 * DAY
    with TelemetryHistory(path, clock=lambda: now) as hist:
        for i in range(7200):  # two hours at 1 Hz, up to now
            hist.record(_row(now - 7200 + i, score=1.0))
        hist.record(_row(now - 2 * DAY, score=1.0))  # past the raw retention
        assert hist.flush()
        hist.prune(now)
    with sqlite3.connect(path) as db:
        recent = db.execute("SELECT COUNT(*) FROM samples WHERE ts >= ?", (now - 3600,)).fetchone()[0]
        older = db.execute("SELECT COUNT(*) FROM samples WHERE ts < ?", (now - 3600,)).fetchone()[0]
    assert recent == 3600 and older == 360
    assert th.read_rollups(path, "sim-001", DAY, now=now)  # the score's minute roll-ups are all there


def test_old_minute_rollups_fold_into_hours_and_the_trend_reads_both(tmp_path):
    path = tmp_path / "h.sqlite3"
    now = 400 * DAY
    old_hour = now - 40 * DAY  # past the minute retention: folded
    with TelemetryHistory(path, clock=lambda: now) as hist:
        for i in range(120):  # two hours of one window a minute, every tenth alarming
            hist.record(_row(old_hour + 60 * i, score=float(i), alarm=i % 10 == 0))
        hist.record(_row(now - 2 * DAY, score=1.0))  # kept per minute
        hist.record(_row(now - 366 * DAY, score=1.0))  # past the hourly retention: gone
        assert hist.flush()
        before = th.read_rollups(path, "sim-001", 400 * DAY, now=now)
        assert len(before) == 122
        hist.prune(now)
        minutes = th.read_rollups(path, "sim-001", 400 * DAY, now=now)
        hours = th.read_hourly(path, "sim-001", 400 * DAY, now=now)
    assert [r.minute_ts for r in minutes] == [(now - 2 * DAY) // 60 * 60]
    assert sum(h.n for h in hours) == 120 and sum(h.alarms for h in hours) == 12
    assert min(h.score_min for h in hours) == 0.0 and max(h.score_max for h in hours) == 119.0
    assert all(h.minute_ts % 3600 == 0 for h in hours)
    total = sum(h.score_mean * h.n for h in hours)
    assert abs(total - sum(range(120))) < 1e-6  # the means are of every folded window
    tr = drift.trend("sim-001", 400 * DAY, path, now=now)
    assert tr.windows.sum() == 121 and list(tr.ts) == sorted(tr.ts)
    assert len(drift.trend("sim-001", 7 * DAY, path, now=now)) == 1


def test_a_second_prune_adds_to_a_partly_folded_hour(tmp_path):
    """Minutes of one hour pruned in two steps end up in one hourly row, nothing counted twice."""
    path = tmp_path / "h.sqlite3"
    hour = 100 * 3600.0
    with TelemetryHistory(path, rollup_retention_s=DAY, clock=lambda: hour + DAY + 3600) as hist:
        for i in range(60):
            hist.record(_row(hour + 60 * i, score=1.0))
        assert hist.flush()
        hist.prune(hour + DAY + 1800)  # the cutoff inside the hour: nothing of it folded yet
        assert th.read_hourly(path, "sim-001", 10 * DAY, now=hour + DAY) == []
        assert len(th.read_rollups(path, "sim-001", 10 * DAY, now=hour + DAY)) == 60
        hist.prune(hour + DAY + 3600)
        [folded] = th.read_hourly(path, "sim-001", 10 * DAY, now=hour + DAY)
        assert folded.n == 60 and th.read_rollups(path, "sim-001", 10 * DAY, now=hour + DAY) == []
        hist.prune(hour + DAY + 7200)
        assert th.read_hourly(path, "sim-001", 10 * DAY, now=hour + DAY)[0].n == 60
