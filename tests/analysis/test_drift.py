"""The drift indicator (app.analysis.drift): its states from scores against the deployed threshold,
only the running version's windows counted, and the trend read from a real telemetry history file."""

from __future__ import annotations

import time

import numpy as np

from app.analysis import drift
from app.services.telemetry_history import TelemetryHistory, TelemetryRow

THRESHOLD = 2.0
RNG = np.random.default_rng(7)


def _normal(n: int) -> np.ndarray:
    return RNG.uniform(0.2, 0.9, n)  # well under the threshold


def test_a_fitted_model_is_ok_and_few_windows_are_unknown():
    scores = _normal(600)
    status = drift.assess("d", scores, np.full(600, 3), THRESHOLD, 3)
    assert status.state == drift.OK and status.alarms.count == 0 and status.alarms.total == 600
    few = drift.assess("d", scores[:10], np.full(10, 3), THRESHOLD, 3)
    assert few.state == drift.UNKNOWN and "too few" in few.message
    assert drift.assess("d", scores, np.full(600, 3), None, 3).state == drift.UNKNOWN


def test_alarms_above_the_limit_with_evidence_are_drift():
    scores = _normal(600)
    scores[:30] = 3.0  # 5 %: the Wilson low end (3.5 %) is above 1 %
    status = drift.assess("d", scores, np.full(600, 3), THRESHOLD, 3)
    assert status.state == drift.DRIFT and status.alarms.count == 30
    assert "normal has changed" in status.message and "Adapt" in status.message
    # 2 alarms in 600 (0.3 %) are no evidence of a rate above 1 %
    scores = _normal(600)
    scores[:2] = 3.0
    assert drift.assess("d", scores, np.full(600, 3), THRESHOLD, 3).state == drift.OK


def test_scores_moving_towards_the_threshold_are_watch():
    scores = RNG.uniform(1.5, 1.95, 600)  # no alarm, but the 90th percentile is at ~0.96x the threshold
    status = drift.assess("d", scores, np.full(600, 3), THRESHOLD, 3)
    assert status.state == drift.WATCH and status.p90_ratio > drift.WATCH_FRACTION


def test_only_the_running_versions_windows_count():
    """The old model alarmed (the reason it was replaced): its windows do not make the new one drift."""
    scores = np.concatenate([np.full(300, 5.0), _normal(300)])
    versions = np.concatenate([np.full(300, 2), np.full(300, 3)])
    status = drift.assess("d", scores, versions, THRESHOLD, 3)
    assert status.state == drift.OK and status.alarms.total == 300
    assert drift.assess("d", scores, versions, THRESHOLD, 2).state == drift.DRIFT


def test_status_and_trend_from_the_history_file(tmp_path):
    path = tmp_path / "telemetry.sqlite3"
    now = time.time()
    with TelemetryHistory(path) as hist:
        for i in range(600):  # ten minutes at 1 Hz, 10 % alarming
            score = 3.0 if i % 10 == 0 else 0.5
            hist.record(TelemetryRow("sim-001", now - 600 + i, 3, score, THRESHOLD, 20.0, (0.1,) * 36, score > 2))
        assert hist.flush()
    status = drift.drift_status("sim-001", THRESHOLD, 3, path, now=now)
    assert status.state == drift.DRIFT and status.alarms.count == 60 and status.alarms.total == 600
    tr = drift.trend("sim-001", 3600, path, now=now)
    assert 10 <= len(tr) <= 11 and tr.windows.sum() == 600 and tr.alarms.sum() == 60
    assert np.nanmax(tr.high) == 3.0 and np.nanmin(tr.low) == 0.5
    assert len(drift.trend("sim-404", 3600, path, now=now)) == 0
    assert drift.drift_status("sim-001", THRESHOLD, 3, tmp_path / "none.sqlite3").state == drift.UNKNOWN


def test_every_device_of_the_history_and_the_drift_command(tmp_path, monkeypatch, capsys):
    """`tinymlops drift` judges every stored device against the model its newest telemetry reports:
    a drifting one (exit 1, with its evidence in the JSON), a fitted one, one whose old version
    alarmed before it was replaced (ok), and --device for one of them."""
    import json

    from app.cli.main import main
    from app.services.telemetry_history import history_path

    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(tmp_path))
    now = time.time()
    with TelemetryHistory(history_path()) as hist:
        for i in range(300):
            ts = now - 300 + i
            drifting = 3.0 if i % 10 == 0 else 0.5  # 10 % alarming
            hist.record(TelemetryRow("sim-001", ts, 3, drifting, THRESHOLD, 20.0, (0.1,) * 36, drifting > 2))
            hist.record(TelemetryRow("sim-002", ts, 3, 0.5, THRESHOLD, 20.0, (0.1,) * 36))
            replaced = (2, 5.0) if i < 150 else (3, 0.5)  # v2 alarmed, v3 runs now and fits
            hist.record(TelemetryRow("sim-003", ts, replaced[0], replaced[1], THRESHOLD, 20.0, (0.1,) * 36))
        assert hist.flush()
    states = {s.device: s for s in drift.fleet_drift(now=now)}
    assert {d: s.state for d, s in states.items()} == {"sim-001": drift.DRIFT, "sim-002": drift.OK,
                                                       "sim-003": drift.OK}
    assert states["sim-003"].model_version == 3 and states["sim-003"].alarms.total == 150
    assert main(["drift", "--json"]) == 1
    shown = {d["device"]: d for d in json.loads(capsys.readouterr().out)}
    assert shown["sim-001"]["alarms"]["count"] == 30 and shown["sim-001"]["alarms"]["n"] == 300
    low, high = shown["sim-001"]["alarms"]["ci95"]
    assert drift.DRIFT_ALARM_LIMIT < low < 0.1 < high
    assert main(["drift", "--device", "sim-002"]) == 0
    out = capsys.readouterr().out
    assert "sim-002" in out and "sim-001" not in out and "ok" in out
    assert main(["drift", "--device", "sim-404"]) == 0 and "unknown" in capsys.readouterr().out
