"""What the deploy API decides per device before and instead of a transfer, against virtual devices
on the real Mosquitto: capabilities (issue 11.11), a re-deploy of the running image (11.13), and a
model the device's profile cannot run (11.16)."""

from __future__ import annotations

import pytest

from app.deploy import api
from app.fleet.device import CAPS
from app.protocol import topics
from app.protocol.codes import Caps, ErrorCode
from app.protocol.image import ModelImage, sha256
from tests.deploy.outage_helpers import device_message

PUSH_ONLY = int(CAPS) & ~int(Caps.PULL_XFER)
PULL_ONLY = int(CAPS) & ~int(Caps.PUSH_XFER)
NO_BENCHMARK = int(CAPS) & ~int(Caps.BENCHMARK)
# A device publishes a changed HELLO at its next tick (50 ms); generous for a loaded machine.
STATUS_WAIT_S = 10.0


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(tmp_path / "data"))


def _wait_status(url: str, device, predicate) -> None:
    """Until the device's status topic carries a HELLO that satisfies `predicate`."""
    device_message(url, device, topics.STATUS, predicate, STATUS_WAIT_S)


def _uncapable(fleet) -> dict[str, int]:
    return {d.device_id: d.counters.get("uncapable_command", 0) for d in fleet.devices}


def test_mixed_fleet_rollout_pushes_to_the_push_only_device(mosquitto_url, virtual_fleet, model_image_v3):
    fleet = virtual_fleet(mosquitto_url, 2, profiles=["stm32l4r5"], caps={"sim-001": PUSH_ONLY})
    results = api.deploy(model_image_v3, ["sim-001", "sim-002"], via="mqtt", broker=mosquitto_url)
    assert [r.outcome for r in results] == ["ok", "ok"], [r.error_message for r in results]
    assert [r.transport for r in results] == ["mqtt-push", "mqtt-pull"]
    for d in fleet.devices:
        assert d.active_model.sha256 == sha256(model_image_v3)
    assert _uncapable(fleet) == {"sim-001": 0, "sim-002": 0}


def test_pull_only_device_is_pulled_not_refused(mosquitto_url, virtual_fleet, model_image_v3):
    fleet = virtual_fleet(mosquitto_url, 1, profiles=["stm32l4r5"], caps={"sim-001": PULL_ONLY})
    (result,) = api.deploy(model_image_v3, "sim-001", via="mqtt", broker=mosquitto_url)
    assert result.outcome == "ok", result.error_message
    assert result.transport == "mqtt-pull"
    assert fleet.device("sim-001").active_model.sha256 == sha256(model_image_v3)
    assert _uncapable(fleet) == {"sim-001": 0}


def test_no_benchmark_to_a_device_without_the_capability(mosquitto_url, virtual_fleet, model_image_v3):
    fleet = virtual_fleet(mosquitto_url, 2, profiles=["stm32l4r5"],
                          caps={"sim-001": NO_BENCHMARK, "sim-002": NO_BENCHMARK})
    (pushed,) = api.deploy(model_image_v3, "sim-001", via="mqtt", broker=mosquitto_url)
    (pulled,) = api.deploy(model_image_v3, "sim-002", via="mqtt", broker=mosquitto_url, pull=True)
    for r in (pushed, pulled):
        assert r.outcome == "ok", r.error_message
        assert r.bench_n is None and r.load_us  # the COMMIT's figures, no inference figures
        assert any("BENCHMARK capability" in n for n in r.notes), r.notes
    assert _uncapable(fleet) == {"sim-001": 0, "sim-002": 0}


def test_redeploying_the_active_version_keeps_the_rollback_target(mosquitto_url, virtual_fleet, model_image_v3):
    fleet = virtual_fleet(mosquitto_url, 1, profiles=["stm32l4r5"])
    dev = fleet.device("sim-001")
    factory_version = dev.active_model.image.version
    (first,) = api.deploy(model_image_v3, "sim-001", via="mqtt", broker=mosquitto_url)
    assert first.outcome == "ok" and dev.hello().prev_version == factory_version
    (again,) = api.deploy(model_image_v3, "sim-001", via="mqtt", broker=mosquitto_url)
    assert again.outcome == "ok", again.error_message
    assert any("already active" in n for n in again.notes), again.notes
    assert again.wire_bytes == 0
    assert dev.hello().prev_version == factory_version
    back = api.rollback("sim-001", via="mqtt", broker=mosquitto_url)
    assert back.ok and back.model_version == factory_version


def test_model_with_ops_the_device_cannot_run_is_refused_before_the_first_byte(mosquitto_url, virtual_fleet,
                                                                               tanh_model_image):
    fleet = virtual_fleet(mosquitto_url, 1, profiles=["stm32l4r5"])
    dev = fleet.device("sim-001")
    before = dev.active_model.sha256
    (result,) = api.deploy(tanh_model_image, "sim-001", via="mqtt", broker=mosquitto_url)
    assert result.outcome == "refused", (result.outcome, result.error_message)
    assert result.error_code == ErrorCode.UNSUPPORTED_OP
    # the fit table's words (app.ml.validation.fit_profile), naming the op
    assert "ops not supported on this device: TANH" in result.error_message
    assert result.wire_bytes == 0
    assert dev.active_model.sha256 == before
    assert ModelImage.from_bytes(tanh_model_image).name  # a valid image: only the device cannot run it


def test_model_whose_arena_the_device_cannot_hold_is_refused_before_the_first_byte(mosquitto_url, virtual_fleet,
                                                                                  model_image_v3):
    from dataclasses import replace

    from app.domain.profiles import get_profile

    fleet = virtual_fleet(mosquitto_url, 1, profiles=["stm32l4r5"])
    dev = fleet.device("sim-001")
    dev.profile = replace(get_profile("stm32l4r5"), arena_budget=1024)
    _wait_status(mosquitto_url, dev, lambda hello: hello.ram_budget == 1024)  # the device says so
    (result,) = api.deploy(model_image_v3, "sim-001", via="mqtt", broker=mosquitto_url)
    assert result.outcome == "refused", (result.outcome, result.error_message)
    assert result.error_code == ErrorCode.ARENA_TOO_SMALL
    assert "exceeds the 1.0 KB RAM budget" in result.error_message  # the fit table's words
    assert result.wire_bytes == 0
    assert dev.active_model.image.name == "factory"
