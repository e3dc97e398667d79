"""Provisioning trust stores and pushing revocations (PROTOCOL.md 6.2) on virtual devices over
Mosquitto, from the CLI: the first key goes into an empty store, a rotated key is vouched for by the
old one, another operator cannot add its key, and a revocation reaches the device signed."""

from __future__ import annotations

import pytest

from app.cli.main import main
from app.deploy import api
from app.domain.errors import DeviceError
from app.fleet.model_slot import Refused
from app.ml.registry import Registry
from app.protocol.codes import ErrorCode
from app.protocol.image import ModelImage
from app.trust.keys import KeyStore


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(tmp_path / "data"))


def test_provision_rotate_and_revoke(mosquitto_url, virtual_fleet, model_image_v3, capsys):
    fleet = virtual_fleet(mosquitto_url, 1)
    device = fleet.device("sim-001")
    assert device.trust.size == 0
    assert main(["keys", "provision", "--device", "sim-001", "--broker", mosquitto_url]) == 0
    assert "holds 1 key(s)" in capsys.readouterr().out and device.trust.size == 1
    # provisioned: an unsigned image is refused before a byte
    (r,) = api.deploy(model_image_v3, ["sim-001"], via="mqtt", broker=mosquitto_url)
    assert r.outcome == "refused" and r.error_code == ErrorCode.BAD_SIGNATURE
    # a rotated key is added, vouched for by the retired one the device holds
    assert main(["keys", "rotate"]) == 0
    assert main(["keys", "provision", "--device", "sim-001", "--broker", mosquitto_url]) == 0
    assert device.trust.size == 2
    img = ModelImage.from_bytes(model_image_v3)
    with Registry() as reg:
        mv = reg.add(name="pump-ae", tflite=img.tflite, card={"ops": ["FULLY_CONNECTED"], "arena": 4096, "fit": {}},
                     image=img)
    (r,) = api.deploy(mv.ref, ["sim-001"], via="mqtt", broker=mosquitto_url)
    assert r.ok and r.signed_by == KeyStore().active().id
    # the revocation reaches the device signed: it refuses that version from now on
    capsys.readouterr()
    assert main(["model", "revoke", mv.ref, "--device", "sim-001", "--broker", mosquitto_url]) == 0
    assert "will refuse" in capsys.readouterr().out
    with pytest.raises(Refused) as refused:
        device.trust.check_not_revoked(mv.name, mv.version)
    assert refused.value.code == ErrorCode.REVOKED


def test_another_operator_cannot_add_its_key(mosquitto_url, virtual_fleet, tmp_path, monkeypatch):
    from app.deploy.provision import provision

    fleet = virtual_fleet(mosquitto_url, 1)
    provision("sim-001", broker=mosquitto_url)
    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(tmp_path / "intruder"))
    with pytest.raises(DeviceError, match="holds none of this operator's keys") as err:
        provision("sim-001", broker=mosquitto_url)
    assert err.value.code == ErrorCode.BAD_SIGNATURE
    assert fleet.device("sim-001").trust.size == 1
