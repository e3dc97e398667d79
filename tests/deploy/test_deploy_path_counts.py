"""What one deployment reads and asks (issue 12, "on the deploy path"): the image is parsed once,
the registry opened once, and no device is looked up on the broker again when the caller's fleet
monitor already holds its HELLO. Counting wrappers around the real functions; the deployment
itself runs against the virtual fleet on a real Mosquitto."""

from __future__ import annotations

import sys

import pytest

from app.deploy import api
from app.deploy.fit_check import FitGate
from app.ml.registry import Registry
from app.protocol.image import ModelImage, sha256
from tests.fixtures.models import register_image

# Seconds of stream the fit gate captures: a few windows, enough to see the device through the
# capture's fleet monitor (too few to judge the fit, which then refuses no one).
FIT_CAPTURE_S = 2.0


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(tmp_path / "data"))


def count_calls(monkeypatch, owner, name: str, calls: list) -> None:
    """Replace owner.name with a wrapper that records each call and then does the real work."""
    real = getattr(owner, name)

    def counting(*args, **kwargs):
        calls.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counting)


def test_a_fit_gated_deploy_of_a_registry_version_parses_the_image_once_and_opens_the_registry_once(
        monkeypatch, mosquitto_url, virtual_fleet, model_image_v3):
    fleet = virtual_fleet(mosquitto_url, 1)
    mv, registered = register_image(model_image_v3)
    parses: list[str] = []  # the module of each caller of ModelImage.from_bytes
    opens: list[str] = []
    real_parse = ModelImage.from_bytes.__func__

    def counting_parse(cls, data: bytes) -> ModelImage:
        parses.append(sys._getframe(1).f_globals["__name__"])
        return real_parse(cls, data)

    monkeypatch.setattr(ModelImage, "from_bytes", classmethod(counting_parse))
    count_calls(monkeypatch, Registry, "__enter__", opens)
    # no telemetry history and no capture: the gate judges nothing and refuses no one
    (r,) = api.deploy(mv.ref, ["sim-001"], via="mqtt", broker=mosquitto_url, fit_gate=FitGate(capture_s=0.0))
    assert r.ok, r.error_message
    assert fleet.device("sim-001").active_model.sha256 == sha256(registered)
    # the virtual device runs in this process and parses what it receives: only the host's count
    assert [name for name in parses if not name.startswith("app.fleet.")] == ["app.deploy.api"]
    assert opens == ["__enter__"]



def test_a_deploy_after_a_fit_capture_takes_the_hellos_the_capture_saw(monkeypatch, mosquitto_url, virtual_fleet,
                                                                        model_image_v3):
    from app.deploy import rollout

    fleet = virtual_fleet(mosquitto_url, 1)
    lookups: list[str] = []
    count_calls(monkeypatch, api, "find_devices", lookups)
    count_calls(monkeypatch, rollout, "find_devices", lookups)
    # no telemetry history: the gate captures through a fleet monitor, which holds the HELLO
    gate = FitGate(capture_s=FIT_CAPTURE_S)
    (r,) = api.deploy(model_image_v3, ["sim-001"], via="mqtt", broker=mosquitto_url, fit_gate=gate)
    assert r.ok, r.error_message
    assert [f.source for f in gate.reports] == ["capture"]
    assert fleet.device("sim-001").active_model.sha256 == sha256(model_image_v3)
    assert lookups == []
    assert "sim-001" in gate.hellos
