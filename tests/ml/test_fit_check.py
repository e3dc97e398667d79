"""Fit-to-machine check on the virtual fleet (issue 14): train on sim-001's recording, check the
candidate against sim-001, sim-003 and sim-005 through the real TFLM interpreter, from the telemetry
history and from a stream capture, over a real Mosquitto."""

from __future__ import annotations

import time

import numpy as np
import pytest

from app.deploy import fit_check
from app.deploy.fit_check import FITS, MARGINAL, UNCHECKED, WILL_FALSE_ALARM, judge
from app.ml import features as feat
from tests.ml.conftest import TEST_EPOCHS, TEST_PATIENCE

TARGETS = ["sim-001", "sim-003", "sim-005"]
DEVICE_ARGS = [arg for device in TARGETS for arg in ("--device", device)]
# Seconds of sim-001 recorded before training. The issue's walk-through recorded 30 s; that leaves 19
# calibration windows, and the threshold's tail bound from so few swings with the sample (measured:
# 3.7-20 over 15 trainings, so 1 in 15 models was too generous to alarm on sim-003 at all, and the
# card warns to record more). 60 s (38 windows) kept it within 3.4-7.3 over 15 trainings, under
# sim-003's median score (7.5-10): the verdicts below rest on that, not on chance.
RECORD_S = 60.0
# Capture length for the check in the test: the default, as `deploy` uses it.
CAPTURE_S = fit_check.CAPTURE_S


def test_judge_verdicts_and_reasons():
    threshold = 2.0
    fits = judge("a", "history", threshold, np.full(100, 0.5))
    assert fits.verdict == FITS and "none of 100 windows" in fits.reason and "25%" in fits.reason
    alarms = judge("b", "capture", threshold, np.r_[np.full(50, 9.0), np.full(12, 1.0)])
    assert alarms.verdict == WILL_FALSE_ALARM
    assert alarms.false_alarms.count == 50 and alarms.false_alarms.total == 62
    assert "50 of 62 windows of its captured stream score above the threshold 2" in alarms.reason
    assert "4.5x the threshold" in alarms.reason and "train on its own normal data" in alarms.reason
    near = judge("c", "history", threshold, np.full(100, 1.9))  # no alarm yet, but 95 % of the threshold
    assert near.verdict == MARGINAL and "95% of the threshold" in near.reason
    few = judge("d", "history", threshold, np.full(10, 0.5))
    assert few.verdict == MARGINAL and "only 10 windows" in few.reason
    one = judge("e", "history", threshold, np.r_[np.full(199, 0.5), 3.0])  # 1 of 200: cannot say > 1 %
    assert one.verdict == MARGINAL and "1 of 200 windows" in one.reason
    none = judge("f", "none", threshold, np.zeros(0))
    assert none.verdict == UNCHECKED and none.windows == 0
    assert set(fits.to_dict()) == {"device", "source", "windows", "threshold", "false_alarms",
                                   "score_quantiles", "predicted_false_alarms_per_day", "verdict", "reason"}


def test_a_wide_score_spread_is_marginal_though_no_sampled_window_alarms():
    """200 windows whose 99th percentile sits at ~70 % of the threshold and none alarms, but whose
    log-normal tail predicts tens of false alarms a machine-day: not "fits". A tight spread at the
    same median fits, and its reason gives the predicted rate."""
    rng = np.random.default_rng(5)
    threshold = 2.0
    wide = judge("w", "history", threshold, np.exp(rng.normal(-0.4, 0.3, 200)))
    assert wide.false_alarms.count == 0 and wide.quantiles["p99"] < 0.8 * threshold
    assert wide.verdict == MARGINAL and wide.predicted_per_day > 1
    assert "false alarms a machine-day" in wide.reason
    tight = judge("t", "history", threshold, np.exp(rng.normal(-0.4, 0.1, 200)))
    assert tight.verdict == FITS and tight.predicted_per_day < 1e-3
    assert "fitted tail predicts" in tight.reason


def test_wrong_feature_width_is_a_clear_error(trained):
    from app.domain.errors import DataError

    with pytest.raises(DataError, match="expects 36"):
        fit_check.score_features(trained.image, np.zeros((5, 7), np.float32))


def test_scores_are_the_device_scores(trained, normal_rows):
    """The check scores exactly as the pipeline (and a device) does: tflm.Scorer on raw rows."""
    from app.ml.pipeline import int8_scores

    rows = normal_rows[:20]
    np.testing.assert_array_equal(fit_check.score_features(trained.image, rows),
                                  int8_scores(trained.image, trained.card["arena"], rows))


def test_issue_14_scenario_flags_the_machines_that_would_false_alarm(mosquitto_url, virtual_fleet, tmp_path,
                                                                     data_dir, capsys):
    """Record 60 s of sim-001, train, then: the check (from history and from a capture) flags sim-003
    and sim-005; `model check --device` says so and exits 1; `deploy --trial` refuses them and
    deploys to sim-001 only."""
    import json

    from app.cli.data import record
    from app.cli.main import main
    from app.deploy.history import DeploymentHistory
    from app.ml import pipeline, training
    from app.ml.registry import Registry
    from app.services import telemetry_history
    from app.services.fleet_monitor import FleetMonitor
    from app.services.telemetry_history import TelemetryHistory
    from app.transport.mqtt_link import MqttConnection

    fleet = virtual_fleet(mosquitto_url, 5)  # the quick start's fleet: seed 0
    speeds = {d.device_id: d.machine.nominal_shaft_hz for d in fleet.devices if d.device_id in TARGETS}
    assert len(set(speeds.values())) == 3, speeds  # the machines really differ (and by mounting gains)
    history_file = telemetry_history.history_path()  # in the test's data dir, where the CLI looks
    with MqttConnection(mosquitto_url) as conn, FleetMonitor(conn) as monitor, \
            TelemetryHistory(history_file) as history:
        monitor.add_listener(history.listener)
        samples, _meta = record(mosquitto_url, "sim-001", RECORD_S)  # meanwhile the history fills
        rows = feat.extract_batch(feat.windows_from_recording(samples))
        model = pipeline.train_model(rows, name="pump-1", config=training.TrainConfig(
            epochs=TEST_EPOCHS, patience=TEST_PATIENCE))
        monitor.remove_listener(history.listener)  # frozen: every check below reads the same windows
        assert history.flush()
        from_history = fit_check.check_devices(model.image, TARGETS, history_path=history_file)
        captured = fit_check.check_devices(model.image, TARGETS, monitor=monitor,
                                           history_path=tmp_path / "none.sqlite3")
    with capsys.disabled():  # the observed figures, for the record (`pytest -s`)
        for report in (*from_history, *captured):
            print(f"{report.source:8} {report.device_id} shaft {speeds[report.device_id]:.2f} Hz: "
                  f"{report.windows} windows, false alarms {report.false_alarms.describe()}, p50 "
                  f"{report.quantiles['p50']:.3g} p99 {report.quantiles['p99']:.3g} vs {report.threshold:.3g}: "
                  f"{report.verdict}")
    for reports, source in ((from_history, "history"), (captured, "capture")):
        verdicts = {r.device_id: r.verdict for r in reports}
        assert all(r.source == source and r.windows >= fit_check.MIN_FIT_WINDOWS for r in reports)
        # the machine it was trained on: its fresh windows score like the held-out ones (no verdict is
        # asserted: a chance window above a threshold from 37 calibration windows is "marginal"), while
        # the other machines' median is several times its own (seen 9-40x) and enough of their
        # windows alarm that even the low end of the rate's interval is over the limit (the verdict)
        own = reports[0]
        assert own.false_alarms.value < 0.25 and own.quantiles["p50"] < own.threshold, own.reason
        for other in reports[1:]:
            assert other.quantiles["p50"] > 4 * own.quantiles["p50"], other.reason
            assert other.false_alarms.count > own.false_alarms.count, other.reason
        assert verdicts["sim-003"] == WILL_FALSE_ALARM, reports[1].reason
        assert verdicts["sim-005"] == WILL_FALSE_ALARM, reports[2].reason
    assert captured[0].windows == fleet_windows(CAPTURE_S)

    with Registry() as reg:
        mv = reg.add(name="pump-1", tflite=model.tflite, card=model.card, image=model.image)
    capsys.readouterr()
    assert main(["model", "check", mv.ref, *DEVICE_ARGS, "--broker", mosquitto_url,
                 "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    # sim-001's verdict is not asserted (see above): the CLI reads the history file again, and a
    # window the listener was handing over while it was removed may land there on close (seen: one
    # more window turned "fits" into "marginal")
    assert [(d["device"], d["source"]) for d in report["devices"]] == [
        ("sim-001", "history"), ("sim-003", "history"), ("sim-005", "history")]
    assert [d["verdict"] for d in report["devices"][1:]] == [WILL_FALSE_ALARM, WILL_FALSE_ALARM]
    own_verdict = report["devices"][0]["verdict"]
    assert report["devices"][1]["false_alarms"]["ci95"][0] > fit_check.FALSE_ALARM_LIMIT

    code = main(["deploy", mv.ref, *DEVICE_ARGS, "--broker", mosquitto_url,
                 "--trial", "--json"])
    out = capsys.readouterr()
    assert code == 1, out.err  # not every device deployed
    outcomes = {r["device"]: (r["outcome"], r["error_message"]) for r in json.loads(out.out)}
    own_outcome = "refused" if own_verdict == WILL_FALSE_ALARM else "ok"  # the gate reads that history
    assert outcomes["sim-001"][0] == own_outcome, outcomes
    for device in ("sim-003", "sim-005"):
        outcome, message = outcomes[device]
        assert outcome == "refused" and message.startswith("fit check: ") and "--force" in message
    assert "will false-alarm" in out.err  # the per-device table before the results
    rows = {r.device: r.outcome for r in DeploymentHistory().list()}
    assert rows == {"sim-001": own_outcome, "sim-003": "refused", "sim-005": "refused"}
    for device in ("sim-003", "sim-005"):  # nothing reached a refused device: it runs the factory model
        assert fleet.device(device).active_model.image.name != "pump-1"
    assert (fleet.device("sim-001").active_model.image.name == "pump-1") == (own_outcome == "ok")


def fleet_windows(seconds: float) -> int:
    return int(np.ceil(seconds * feat.DEFAULT_SPEC.sample_rate / feat.DEFAULT_SPEC.window))


def test_device_without_history_or_stream_is_unchecked_with_a_reason(mosquitto_url, trained, tmp_path):
    """An unknown device (nobody on the broker) is neither passed nor refused: 'unchecked', and why."""
    from app.services.fleet_monitor import FleetMonitor
    from app.transport.mqtt_link import MqttConnection

    with MqttConnection(mosquitto_url) as conn, FleetMonitor(conn) as monitor:
        [report] = fit_check.check_devices(trained.image, ["sim-404"], monitor=monitor,
                                           history_path=tmp_path / "none.sqlite3")
    assert report.verdict == UNCHECKED and report.windows == 0
    assert "not online on the broker" in report.reason
    assert fit_check.refusals([report]) == {}  # no evidence: not refused
    [report] = fit_check.check_devices(trained.image, ["sim-404"], history_path=tmp_path / "none.sqlite3")
    assert report.verdict == UNCHECKED and "no broker to capture from" in report.reason


def test_non_finite_history_windows_are_left_out(trained, normal_rows, tmp_path):
    from app.services.telemetry_history import TelemetryHistory, TelemetryRow

    rows = normal_rows[:40].copy()
    rows[3, 5] = np.nan
    rows[7, 0] = np.inf
    path = tmp_path / "h.sqlite3"
    with TelemetryHistory(path) as hist:
        now = time.time()
        for i, row in enumerate(rows):
            hist.record(TelemetryRow("sim-001", now - 40 + i, 1, 0.5, 2.0, 24.0, tuple(row.tolist())))
        assert hist.flush()
    [report] = fit_check.check_devices(trained.image, ["sim-001"], history_path=path)
    assert report.source == "history" and report.windows == 38
    assert "(2 windows with non-finite features left out)" in report.reason
    assert np.isfinite(list(report.quantiles.values())).all()


def test_model_check_device_bad_input_is_a_sentence(trained, data_dir, capsys):
    from app.cli.main import main
    from app.ml.registry import Registry

    with Registry() as reg:
        mv = reg.add(name="pump-9", tflite=trained.tflite, card=trained.card, image=trained.image)
    assert main(["model", "check", mv.ref, "--device", "sim-001", "--capture", "-1"]) == 2
    assert "error: --capture must be 0 or more seconds" in capsys.readouterr().err
    assert main(["model", "check", "pump-404@latest", "--device", "sim-001"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    # history only (--capture 0), none stored: unchecked, said per device, exit 0 (nothing predicts alarms)
    assert main(["model", "check", mv.ref, "--device", "sim-001", "--capture", "0"]) == 0
    out = capsys.readouterr().out
    assert "sim-001" in out and "unchecked" in out and "telemetry history" in out
