"""A telemetry history file that does not take writes (issue 14, bad input on the history): locked by
another PROCESS (a real SQLite lock: a child python holding BEGIN EXCLUSIVE), locked when the history
is opened, or full (a real SQLITE_FULL from `PRAGMA max_page_count`: a tmpfs needs mount rights).
Ingest goes on, one log line says so (not one per retry), rows wait in the bounded queue and are
written when the file is writable again; past the bound the oldest are dropped, counted and logged."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from app.services import telemetry_history as th
from app.services.telemetry_history import TelemetryHistory, TelemetryRow
from tests.transport.helpers import wait_until

# The writer, the lock holder and a flush on a loaded 2-core machine.
WAIT_S = 60.0
# The writer gives up on a lock after this (the production busy timeout is 10 s).
QUICK_BUSY_S = 0.2

LOCK_HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()  # held until the test writes a line (or closes the pipe)
db.execute("ROLLBACK")
"""


# Rows are stamped from ten minutes ago (the reads look back from now): inside the hour the history
# keeps whole (RAW_FULL_S), so a prune thins none. Taken when each test starts, not when the module is
# imported: a worker may reach this module most of an hour after collecting it.
BASE_AGE_S = 600
BASE_TS = 0.0  # set by _rows_of_ten_minutes_ago for each test


@pytest.fixture(autouse=True)
def _rows_of_ten_minutes_ago(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "BASE_TS", time.time() - BASE_AGE_S)


def _row(device: str, ts: float) -> TelemetryRow:
    return TelemetryRow(device, BASE_TS + ts, 3, 0.5, 2.5, 24.0, tuple(float(np.float32(i / 7)) for i in range(36)))


class LockHolder:
    """Another process holding the database's write lock until release()."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(path)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            self.proc.wait(WAIT_S)


def _stored(hist: TelemetryHistory, devices: int) -> int:
    return sum(len(hist.features(f"sim-{d:03d}", since_s=2 * 3600)) for d in range(devices))


def _messages(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and text in r.getMessage()]


def test_locked_by_another_process_logged_once_and_nothing_lost(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(th, "BUSY_TIMEOUT_S", QUICK_BUSY_S)
    path = tmp_path / "h.sqlite3"
    caplog.set_level(logging.DEBUG, logger=th.__name__)
    with TelemetryHistory(path, flush_interval_s=0.05) as hist:
        hist.record(_row("sim-000", 1.0))
        assert hist.flush()
        holder = LockHolder(path)
        try:
            for i in range(1, 40):
                hist.record(_row(f"sim-{i % 3:03d}", 1.0 + i))
            wait_until(lambda: hist.write_errors >= 4, WAIT_S, "the writer to retry under the lock")
            assert not hist.writable
        finally:
            holder.release()
        assert hist.flush(WAIT_S) and hist.writable
        assert hist.dropped == 0 and _stored(hist, 3) == 40
    assert len(_messages(caplog, "cannot write")) == 1
    [back] = _messages(caplog, "writable again after")
    assert "0 lost" in back
    assert not [r for r in caplog.records if r.exc_info]  # no traceback for a busy file


def test_the_bound_drops_the_oldest_counted_and_logged(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(th, "BUSY_TIMEOUT_S", QUICK_BUSY_S)
    monkeypatch.setattr(th, "QUEUE_MAX_ROWS", 50)
    path = tmp_path / "h.sqlite3"
    caplog.set_level(logging.WARNING, logger=th.__name__)
    with TelemetryHistory(path, flush_interval_s=0.05) as hist:
        holder = LockHolder(path)
        try:
            for i in range(80):
                hist.record(_row("sim-000", 100.0 + i))
            wait_until(lambda: hist.write_errors >= 2, WAIT_S, "the writer to hit the lock")
        finally:
            holder.release()
        assert hist.flush(WAIT_S)
        kept = hist.features("sim-000", since_s=2 * 3600)
        assert hist.dropped == 30 and len(kept) == 50
        assert kept.ts[0] == BASE_TS + 130.0 and kept.ts[-1] == BASE_TS + 179.0  # the newest kept, the oldest dropped
    assert _messages(caplog, "oldest dropped")
    [back] = _messages(caplog, "writable again after")
    assert "30 lost" in back


def test_locked_when_opened_the_history_still_takes_rows(tmp_path, monkeypatch, caplog):
    """The app starts while another process holds the file: the session must not fail (it used to
    raise 'database is locked' from the constructor); rows wait and are written later."""
    monkeypatch.setattr(th, "BUSY_TIMEOUT_S", QUICK_BUSY_S)
    path = tmp_path / "h.sqlite3"
    caplog.set_level(logging.WARNING, logger=th.__name__)
    holder = LockHolder(path)
    try:
        hist = TelemetryHistory(path, flush_interval_s=0.05)
        for i in range(10):
            hist.record(_row("sim-001", 1.0 + i))
        assert not hist.writable
    finally:
        holder.release()
    try:
        assert hist.flush(WAIT_S) and hist.writable
        assert len(hist.features("sim-001", since_s=2 * 3600)) == 10
    finally:
        hist.close()
    assert len(_messages(caplog, "cannot write")) == 1


def test_a_full_database_keeps_rows_until_there_is_room(tmp_path, caplog):
    path = tmp_path / "h.sqlite3"
    caplog.set_level(logging.WARNING, logger=th.__name__)
    with TelemetryHistory(path, flush_interval_s=0.05) as hist:
        hist.record(_row("sim-000", 1.0))
        assert hist.flush()
        db = hist._open()  # the writer's own connection: SQLite's page limit is per connection
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages}")  # no room for one more page: SQLITE_FULL
        for i in range(1, 400):
            hist.record(_row("sim-000", 1.0 + i))
        wait_until(lambda: hist.write_errors >= 3, WAIT_S, "the writer to find the file full")
        assert not hist.writable
        db.execute("PRAGMA max_page_count = 1073741823")  # room again
        assert hist.flush(WAIT_S) and hist.writable
        assert hist.dropped == 0 and len(hist.features("sim-000", since_s=2 * 3600)) == 400
    [msg] = _messages(caplog, "cannot write")
    assert "full" in msg


def test_live_telemetry_goes_on_while_the_history_is_locked(mosquitto_url, virtual_fleet, tmp_path, monkeypatch):
    """A virtual fleet on Mosquitto feeds a FleetMonitor with the history as its listener: while
    another process holds the file, the monitor's records keep updating (the live view's source) and
    the telemetries of the outage are in the file once it is released."""
    from app.services.fleet_monitor import FleetMonitor
    from app.transport.mqtt_link import MqttConnection

    monkeypatch.setattr(th, "BUSY_TIMEOUT_S", QUICK_BUSY_S)
    virtual_fleet(mosquitto_url, 1, seed=9)
    path = tmp_path / "h.sqlite3"
    seen: list[float] = []
    with MqttConnection(mosquitto_url) as conn, FleetMonitor(conn) as monitor, \
            TelemetryHistory(path, flush_interval_s=0.05) as hist:
        monitor.add_listener(hist.listener)
        monitor.add_listener(lambda event, rec: seen.append(rec.last_seen) if event == "telemetry" else None)
        wait_until(lambda: len(seen) >= 1, WAIT_S, "a first telemetry")
        holder = LockHolder(path)
        try:
            during = len(seen)
            wait_until(lambda: not hist.writable and len(seen) >= during + 3, WAIT_S,
                       "3 more telemetries with the file locked")
            locked_at = seen[-1]
        finally:
            holder.release()
        assert hist.flush(WAIT_S)
        stored = hist.features("sim-001", since_s=3600)
        assert locked_at in set(stored.ts.tolist())  # a telemetry of the outage, written afterwards
        assert hist.dropped == 0
