"""Telemetry history on real SQLite, fed by a FleetMonitor watching a virtual fleet on Mosquitto."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from app.ml.features import DEFAULT_SPEC
from app.services import telemetry_history as th
from app.services.fleet_monitor import FleetMonitor
from app.services.telemetry_history import TelemetryHistory, TelemetryRow
from app.transport.mqtt_link import MqttConnection
from tests.transport.helpers import wait_until

# Virtual devices send one telemetry a second; a loaded 2-core box may be much slower.
FLEET_WAIT_S = 60.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _row(device: str, ts: float, score: float | None, alarm: bool = False, n: int = 36) -> TelemetryRow:
    feats = tuple(float(np.float32(ts / 1000 + i / 7)) for i in range(n))
    return TelemetryRow(device, ts, 3, score, 2.5, 24.0, feats, alarm)


def test_rows_come_back_exactly_with_minute_rollups(tmp_path):
    start = 999_960.0  # a minute boundary (minute 16666)
    clock = Clock(start + 100)
    with TelemetryHistory(tmp_path / "h.sqlite3", clock=clock) as hist:
        rows = [_row("sim-001", start + i, score=float(i), alarm=i >= 55) for i in range(60)]
        rows += [_row("sim-002", start + i, score=None) for i in range(0, 60, 10)]  # no model: no score
        for row in rows[:30]:
            hist.record(row)
        assert hist.flush()
        for row in rows[30:]:  # a minute split over two batches: the roll-up adds up
            hist.record(row)
        assert hist.flush()
        got = hist.features("sim-001", since_s=120)
        assert len(got) == 60
        np.testing.assert_array_equal(got.features, np.array([r.features for r in rows[:60]], np.float32))
        assert got.ts.tolist() == [r.ts for r in rows[:60]]
        assert got.scores.tolist() == [float(i) for i in range(60)]
        newest = hist.features("sim-001", since_s=120, limit=5)
        assert newest.ts.tolist() == [start + i for i in range(55, 60)]
        assert np.isnan(hist.features("sim-002", since_s=120).scores).all()
        (minute,) = hist.rollups("sim-001", since_s=120)
        assert (minute.n, minute.score_min, minute.score_max, minute.alarms) == (60, 0.0, 59.0, 5)
        assert minute.score_mean == pytest.approx(29.5)
        (quiet,) = hist.rollups("sim-002", since_s=120)
        assert (quiet.n, quiet.score_min, quiet.score_mean, quiet.alarms) == (6, None, None, 0)
        assert hist.devices() == ["sim-001", "sim-002"]
        assert hist.features("sim-404", since_s=120).features.shape[0] == 0


def test_retention_prunes_raw_rows_and_keeps_rollups_longer(tmp_path):
    clock = Clock(10 * 86400.0)
    with TelemetryHistory(tmp_path / "h.sqlite3", raw_retention_s=3600, rollup_retention_s=86400,
                          clock=clock) as hist:
        for ts in (clock.now - 2 * 86400, clock.now - 7200, clock.now - 60):
            hist.record(_row("sim-001", ts, score=1.0))
        assert hist.flush()
        hist.prune()
        assert hist.features("sim-001", since_s=30 * 86400).ts.tolist() == [clock.now - 60]
        assert [r.minute_ts for r in hist.rollups("sim-001", since_s=30 * 86400)] == [
            (clock.now - 7200) // 60 * 60, (clock.now - 60) // 60 * 60]


def test_history_survives_a_restart_and_a_duplicate_message(tmp_path):
    path = tmp_path / "h.sqlite3"
    row = _row("sim-001", 1000.0, score=1.0)
    with TelemetryHistory(path, clock=Clock(1001.0)) as hist:
        hist.record(row)
    with TelemetryHistory(path, clock=Clock(1001.0)) as hist:  # close() committed the queue
        hist.record(row)  # the same message again (a broker redelivery): stored once
        hist.record(_row("sim-003", 1000.5, score=2.0))
        assert hist.flush()
        assert len(hist.features("sim-001", since_s=60)) == 1
        assert hist.devices() == ["sim-001", "sim-003"]


def test_reading_a_missing_or_foreign_file_gives_nothing(tmp_path):
    assert len(th.read_features(tmp_path / "absent.sqlite3", "sim-001", 60)) == 0
    other = tmp_path / "other.sqlite3"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    assert len(th.read_features(other, "sim-001", 60)) == 0
    assert th.read_rollups(other, "sim-001", 60) == []


def test_fleet_monitor_feeds_the_history(mosquitto_url, virtual_fleet, tmp_path):
    """Every telemetry of a live virtual fleet lands in the history with the device's own features."""
    fleet = virtual_fleet(mosquitto_url, 2, seed=4)
    with MqttConnection(mosquitto_url) as conn, FleetMonitor(conn) as monitor, \
            TelemetryHistory(tmp_path / "h.sqlite3") as hist:
        monitor.add_listener(hist.listener)

        def stored(device: str) -> int:
            hist.flush()
            return len(hist.features(device, since_s=3600))

        wait_until(lambda: stored("sim-001") >= 3 and stored("sim-002") >= 3, FLEET_WAIT_S, "3 telemetries each")
        monitor.remove_listener(hist.listener)
        assert hist.flush()
        got = hist.features("sim-001", since_s=3600)
        record = monitor.get("sim-001")
        assert got.features.shape[1] == DEFAULT_SPEC.n_features == len(record.features)
        assert np.isfinite(got.features).all() and np.isfinite(got.scores).all()
        assert (got.model_versions == record.model_version).all()
        # the newest stored window is the last telemetry the monitor saw (listener removed above)
        np.testing.assert_array_equal(got.features[-1], np.array(record.features, np.float32))
        assert got.scores[-1] == pytest.approx(record.score)
        assert hist.rollups("sim-001", since_s=3600)[-1].n >= 1
    assert fleet.devices[0].device_id == "sim-001"


def test_a_locked_database_delays_rows_and_loses_none(tmp_path, monkeypatch):
    """Another process holding the write lock past the busy timeout: the writer keeps its batch and
    writes it once the lock is gone (a real SQLite lock, not a fake)."""
    monkeypatch.setattr(th, "BUSY_TIMEOUT_S", 0.2)  # the writer gives up on the lock quickly
    path = tmp_path / "h.sqlite3"
    with TelemetryHistory(path, flush_interval_s=0.05, clock=Clock(2000.0)) as hist:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            for i in range(20):
                hist.record(_row(f"sim-{i % 3:03d}", 1000.0 + i, score=float(i)))
            wait_until(lambda: hist.write_errors >= 2, FLEET_WAIT_S, "the writer to hit the lock twice")
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert hist.flush()
        assert hist.dropped == 0
        assert sum(len(hist.features(f"sim-{d:03d}", since_s=3600)) for d in range(3)) == 20
        assert sum(r.n for d in range(3) for r in hist.rollups(f"sim-{d:03d}", since_s=3600)) == 20


def test_app_session_keeps_the_history_in_the_data_dir(mosquitto_url, virtual_fleet, tmp_path, monkeypatch):
    from app.services.app_session import AppSession, SessionConfig

    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(tmp_path / "data"))
    virtual_fleet(mosquitto_url, 1, seed=6)
    session = AppSession(SessionConfig(broker_url=mosquitto_url)).start()
    try:
        assert session.history is not None and session.history.path == tmp_path / "data" / "telemetry.sqlite3"

        def stored() -> int:
            session.history.flush()
            return len(th.read_features(None, "sim-001", since_s=3600))

        wait_until(lambda: stored() >= 2, FLEET_WAIT_S, "the session to store sim-001's telemetry")
    finally:
        session.close()
    assert len(th.read_features(None, "sim-001", since_s=3600)) >= 2  # committed, still there after close
