"""Why a device alarmed: the per-feature reconstruction error, recomputed on the host with the
device's own model image and the real TFLM interpreter, in the events of the CLI (and the GUI:
tests/ui/test_fleet_view.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.analysis.alarm_cause import AlarmExplainer, cause_of, feature_label
from app.analysis.fleet_events import transitions
from app.cli.main import main
from app.fleet.fleet import load_factory_image
from app.ml import tflm
from app.ml.features import DEFAULT_SPEC
from app.protocol import messages as m
from app.protocol.codes import FaultMask
from app.protocol.image import ModelImage, sha256
from app.services.fleet_monitor import DeviceRecord

# The feature the tests push far out of its normal range, and by how many standard deviations.
PUSHED = "x_band7"
PUSH_STD = 8.0


def test_feature_labels_name_axis_and_band():
    assert feature_label("x_band7") == ("x", "x band 850-1603 Hz energy")
    assert feature_label("y_band0") == ("y", "y band 12-22 Hz energy")
    assert feature_label("z_kurtosis") == ("z", "z kurtosis")
    assert feature_label("y_rms") == ("y", "y RMS")


def test_cause_ranks_the_features_by_their_share_of_the_score():
    errors = np.full(DEFAULT_SPEC.n_features, 0.01, np.float32)
    names = DEFAULT_SPEC.names()
    errors[names.index("z_band3")] = 2.0
    errors[names.index("x_crest")] = 1.0
    cause = cause_of(errors)
    assert cause.score == pytest.approx(float(errors.mean()), rel=1e-6)
    assert [f.name for f in cause.features] == ["z_band3", "x_crest"]  # the 0.4 % ones are not named
    assert cause.features[0].share == pytest.approx(2.0 / float(errors.sum()), rel=1e-6)
    assert cause.text() == "driven by z band 69-128 Hz energy (60 %), x crest factor (30 %)"
    with pytest.raises(ValueError):
        cause_of(errors[:5])


@pytest.fixture(scope="module")
def factory() -> tuple[bytes, ModelImage]:
    raw = load_factory_image()
    return raw, ModelImage.from_bytes(raw)


def _alarming_record(raw: bytes, image: ModelImage, **overrides) -> DeviceRecord:
    """A record as the fleet monitor makes it from a device that scored `features` with `image`
    (the score computed as a device computes it: the real TFLM, PROTOCOL.md 6.1)."""
    features = np.array(image.selftest_input, np.float32)
    i = DEFAULT_SPEC.names().index(PUSHED)
    features[i] += np.float32(PUSH_STD * image.std[i])
    score = tflm.Scorer(image, tflm.MAX_ARENA_PROBE).score(features)
    hello = m.Hello(device_id="dev-1", model_name=image.name, model_version=image.version,
                    model_sha=sha256(raw)[:8])
    fields = dict(device_id="dev-1", model_name=image.name, model_version=image.version, score=score,
                  threshold=image.threshold, alarm=True, features=tuple(float(v) for v in features), hello=hello)
    return DeviceRecord(**{**fields, **overrides})


def test_the_host_reproduces_the_device_score_and_names_the_feature_that_drove_it(factory):
    raw, image = factory
    record = _alarming_record(raw, image)
    cause = AlarmExplainer(lambda name, version: raw).explain(record)
    assert cause is not None
    assert cause.score == pytest.approx(record.score, rel=1e-5)
    assert cause.features[0].name == PUSHED and cause.features[0].axis == "x"
    assert 0 < cause.features[0].share <= 1 and cause.features[0].share > cause.features[1].share
    # the events panel's and the CLI's sentence
    (event,) = [e for e in transitions(None, record, AlarmExplainer(lambda n, v: raw).text) if e[0] == "alarm"]
    assert "driven by x band 850-1603 Hz energy (" in event[2] and event[2].startswith("ALARM: anomaly score")


def test_no_cause_rather_than_a_wrong_one(factory):
    raw, image = factory
    explainer = AlarmExplainer(lambda name, version: raw)
    record = _alarming_record(raw, image)
    other_image = m.Hello(device_id="dev-1", model_name=image.name, model_version=image.version,
                          model_sha=b"\x01" * 8)
    assert explainer.explain(_alarming_record(raw, image, hello=other_image)) is None  # the device runs another
    assert explainer.explain(_alarming_record(raw, image, score=record.score * 1.5)) is None  # not its score
    assert explainer.explain(_alarming_record(raw, image, features=())) is None  # no features sent
    assert AlarmExplainer(lambda name, version: None).explain(record) is None  # model not on this host
    assert transitions(None, _alarming_record(raw, image, features=()), explainer.text)[1][2] == (
        f"ALARM: anomaly score {record.score:.3f} above threshold {image.threshold:.3f}")


def test_fleet_events_cli_prints_an_alarm_with_its_cause(mosquitto_url, virtual_fleet, tmp_path, monkeypatch,
                                                         capsys):
    """A virtual device with a bearing fault alarms on its factory model; `fleet events` finds the
    model on this host, reproduces the device's score and says which features drove it."""
    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(tmp_path / "data"))
    virtual_fleet(mosquitto_url, 1, faults={"sim-001": (FaultMask.BEARING_OUTER, 1.0)})
    assert main(["fleet", "events", "--broker", mosquitto_url, "--json", "--until-alarm", "--wait", "60"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    alarms = [e for e in lines if e["level"] == "alarm"]
    assert alarms, lines
    (alarm,) = alarms
    assert alarm["device"] == "sim-001" and "driven by" in alarm["text"], alarm
    cause = alarm["cause"]
    assert cause is not None and 1 <= len(cause["features"]) <= 3
    assert all(f["label"] in alarm["text"] and f["axis"] in "xyz" for f in cause["features"])
    assert sum(f["share"] for f in cause["features"]) <= 1.0 + 1e-6
