"""Signed deployments end to end (PROTOCOL.md 6.2) on virtual devices over Mosquitto and through the
CLI: a registered version goes out with its signature and is activated; an unsigned, tampered,
foreign-signed or revoked image is refused (before a byte where the host can tell, else by the
device at COMMIT) and every device keeps its running model; the history names the signer."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.cli.main import main
from app.deploy import api
from app.deploy.history import DeploymentHistory
from app.ml import export
from app.ml.registry import Registry
from app.protocol.codes import ErrorCode
from app.protocol.image import ModelImage, sha256
from app.trust import signing
from app.trust.keys import KeyStore


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture
def registered(model_image_v3):
    img = ModelImage.from_bytes(model_image_v3)
    with Registry() as reg:
        mv = reg.add(name="pump-ae", tflite=img.tflite, card={"ops": ["FULLY_CONNECTED"], "arena": 4096, "fit": {}},
                     image=img)
        return mv, reg.image_bytes(mv), reg.signature(mv), reg.keys.active().id


@pytest.fixture
def secured_fleet(mosquitto_url, virtual_fleet):
    return virtual_fleet(mosquitto_url, 2, trust=KeyStore().public_keys() or [_ensure_key()])


def _ensure_key() -> bytes:
    return KeyStore().ensure().public_raw


def _models(fleet) -> list[bytes]:
    return [dev.active_model.sha256 for dev in fleet.devices]


def test_a_registered_version_deploys_signed_and_the_history_names_the_signer(registered, mosquitto_url,
                                                                              secured_fleet):
    mv, image, block, key_id = registered
    (r,) = api.deploy(mv.ref, ["sim-001"], via="mqtt", broker=mosquitto_url, fit_gate=None)
    assert r.ok, r.error_message
    assert r.signed_by == key_id == block.key_hex
    assert secured_fleet.device("sim-001").active_model.sha256 == sha256(image)
    assert DeploymentHistory().list()[0].signed_by == key_id


def test_an_exported_file_deploys_and_a_tampered_one_is_refused(registered, mosquitto_url, secured_fleet, tmp_path,
                                                                capsys):
    mv, image, _block, _key = registered
    with Registry() as reg:
        path = export.export_package(reg, mv, tmp_path / "out")[1]
    assert main(["deploy", str(path), "--device", "sim-001", "--broker", mosquitto_url, "--skip-fit-check"]) == 0
    assert secured_fleet.device("sim-001").active_model.sha256 == sha256(image)
    data = bytearray(path.read_bytes())
    data[len(image) - 30] ^= 0x01  # inside the image: the signature no longer matches
    bad = tmp_path / "tampered.tmlm"
    bad.write_bytes(bytes(data))
    before = _models(secured_fleet)
    code = main(["deploy", str(bad), "--device", "sim-002", "--broker", mosquitto_url, "--skip-fit-check"])
    assert code != 0
    assert "does not match" in capsys.readouterr().err
    assert _models(secured_fleet) == before


def test_unsigned_image_is_refused_before_a_byte(model_image_v3, mosquitto_url, secured_fleet):
    before = _models(secured_fleet)
    (r,) = api.deploy(model_image_v3, ["sim-001"], via="mqtt", broker=mosquitto_url)
    assert r.outcome == "refused" and r.error_code == ErrorCode.BAD_SIGNATURE and r.wire_bytes == 0
    assert "only signed images" in r.error_message
    assert _models(secured_fleet) == before


def test_an_image_signed_by_a_foreign_key_is_refused_by_the_device(model_image_v3, mosquitto_url, secured_fleet):
    stranger = Ed25519PrivateKey.generate()
    signed_file = model_image_v3 + signing.sign_image(model_image_v3, stranger).to_bytes()
    before = _models(secured_fleet)
    (r,) = api.deploy(signed_file, ["sim-002"], via="mqtt", broker=mosquitto_url)
    assert not r.ok and r.error_code == ErrorCode.BAD_SIGNATURE, r
    assert _models(secured_fleet) == before


def test_a_revoked_version_is_never_deployed(registered, mosquitto_url, secured_fleet, tmp_path, capsys):
    mv, _image, _block, _key = registered
    with Registry() as reg:
        path = export.export_package(reg, mv, tmp_path / "out")[1]
    assert main(["model", "revoke", mv.ref]) == 0
    before = _models(secured_fleet)
    for target in (mv.ref, str(path)):
        assert main(["deploy", target, "--device", "sim-001", "--broker", mosquitto_url, "--skip-fit-check"]) != 0
        assert "revoked" in capsys.readouterr().err
    assert _models(secured_fleet) == before


def test_a_pull_rollout_sends_the_signature_to_devices_that_verify(registered, mosquitto_url, secured_fleet):
    """The broker-pull rollout (PROTOCOL.md 5.2) gives each SIGNED device the image's block (XFER_SIGN)
    before COMMIT, as the push path does: without it a provisioned device refuses the image at COMMIT."""
    mv, image, _block, key_id = registered
    results = api.deploy(mv.ref, ["sim-001", "sim-002"], via="mqtt", broker=mosquitto_url, pull=True, fit_gate=None)
    for r in results:
        assert r.ok and r.transport == "mqtt-pull", (r.device, r.outcome, r.error_code, r.error_message)
        assert r.signed_by == key_id
    assert _models(secured_fleet) == [sha256(image)] * 2
