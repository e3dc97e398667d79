"""Signed model images: keys, the signed statement, registry signatures, export, bad signatures.

The golden vectors (tests/vectors/signature_*.json) pin the byte layout of PROTOCOL.md 6.2 for
every implementation; these tests check the Python side against them and against real keys.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.cli.main import main as cli
from app.ml import export
from app.ml.registry import Registry
from app.trust import signing
from app.trust.keys import (
    PASSPHRASE_ENV,
    STATUS_ACTIVE,
    STATUS_RETIRED,
    STORAGE_FILE_ENCRYPTED,
    STORAGE_FILE_PLAIN,
    KeyStore,
    SigningKeyError,
)
from app.trust.signing import SignatureBlock, SignatureError

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "signatures.json"


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    return tmp_path / "data"


def test_plain_key_file_is_private_and_warned(data_dir, caplog):
    ks = KeyStore()
    info = ks.init()
    assert info.storage == STORAGE_FILE_PLAIN and "unencrypted" in caplog.text
    mode = stat.S_IMODE(os.stat(ks.dir / f"{info.id}.pem").st_mode)
    assert mode == 0o600
    assert len(info.id) == 16 and info.id == signing.key_id(info.public_raw).hex()
    with pytest.raises(SigningKeyError, match="rotate"):
        ks.init()


def test_encrypted_key_needs_its_passphrase(data_dir, monkeypatch):
    monkeypatch.setenv(PASSPHRASE_ENV, "correct horse")
    ks = KeyStore()
    info = ks.init()
    assert info.storage == STORAGE_FILE_ENCRYPTED
    pem = (ks.dir / f"{info.id}.pem").read_bytes()
    assert b"ENCRYPTED" in pem
    ks.private_key()  # opens with the passphrase
    monkeypatch.setenv(PASSPHRASE_ENV, "wrong")
    with pytest.raises(SigningKeyError, match="wrong passphrase"):
        ks.private_key()
    monkeypatch.delenv(PASSPHRASE_ENV)
    with pytest.raises(SigningKeyError, match=PASSPHRASE_ENV):
        ks.private_key()


def test_rotation_keeps_old_signatures_verifiable(data_dir, trained):
    with Registry() as reg:
        mv = reg.add(name="pump", tflite=trained.tflite, card=trained.card, image=trained.image)
        first = reg.signature(mv)
        old, new = reg.keys.rotate()
        assert old.id == first.key_hex and old.status == STATUS_RETIRED and new.status == STATUS_ACTIVE
        second = reg.signature(mv)  # signed again by the new active key
        image = reg.image_bytes(mv)
        trusted = reg.keys.trusted()
    assert second.key_hex == new.id != first.key_hex
    assert signing.verify_image(image, first, trusted) == first.key_hex
    assert signing.verify_image(image, second, trusted) == new.id


def test_every_registered_version_is_signed_and_exported_signed(data_dir, trained, tmp_path):
    with Registry() as reg:
        mv = reg.add(name="pump", tflite=trained.tflite, card=trained.card, image=trained.image)
        block = reg.signature(mv, sign_if_missing=False)
        assert block is not None and block.key_hex == reg.keys.active().id
        path = export.export_package(reg, mv, tmp_path / "out")[1]
        trusted = reg.keys.trusted()
    image, carried = signing.split_signed_file(path.read_bytes())
    assert carried == block
    assert signing.verify_image(image, carried, trusted) == block.key_hex
    manifest = json.loads((tmp_path / "out" / "pump-v1.json").read_text())
    assert manifest["files"]["image"]["signed_by"] == block.key_hex


@pytest.fixture
def signed(trained):
    from dataclasses import replace

    key = Ed25519PrivateKey.generate()
    image = replace(trained.image, name="pump", version=4).to_bytes()
    block = signing.sign_image(image, key)
    trusted = {block.key_id: key.public_key().public_bytes_raw()}
    return image, block, trusted


def test_a_flipped_bit_anywhere_in_the_image_is_refused(signed):
    image, block, trusted = signed
    for pos in (0x40, len(image) // 2, len(image) - 1):
        bad = bytearray(image)
        bad[pos] ^= 0x01
        try:
            signing.verify_image(bytes(bad), block, trusted)
        except SignatureError:
            continue
        except Exception as exc:  # a flip that breaks the container is refused by the parser
            assert "image" in str(exc)
            continue
        pytest.fail(f"bit flip at {pos} verified")


def test_a_flipped_bit_in_the_signature_is_refused(signed):
    image, block, trusted = signed
    sig = bytearray(block.signature)
    sig[10] ^= 0x80
    with pytest.raises(SignatureError, match="does not match"):
        signing.verify_image(image, SignatureBlock(block.key_id, bytes(sig)), trusted)


def test_unknown_key_truncated_and_missing_blocks(signed):
    image, block, _ = signed
    with pytest.raises(SignatureError, match="does not trust"):
        signing.verify_image(image, block, {})
    with pytest.raises(SignatureError, match="truncated"):
        signing.split_signed_file(image + block.to_bytes()[:-1])
    assert signing.split_signed_file(image) == (image, None)


def test_an_image_restamped_as_another_version_is_refused(signed):
    from app.protocol.image import ModelImage

    image, block, trusted = signed
    img = ModelImage.from_bytes(image)
    img.version = 5
    with pytest.raises(SignatureError, match="does not match"):
        signing.verify_image(img.to_bytes(), block, trusted)


def test_statement_for_another_feature_spec_differs(signed):
    image, _block, _ = signed
    sha = signing.hashlib.sha256(image).digest()
    assert signing.statement(sha, "pump", 4, 1) != signing.statement(sha, "pump", 4, 2)


def test_golden_vectors(signed):
    """tests/vectors/signatures.json: every implementation must give the same verdicts."""
    data = json.loads(VECTORS.read_text())
    trusted = {bytes.fromhex(k["key_id"]): bytes.fromhex(k["public"]) for k in data["trusted"]}
    for case in data["cases"]:
        image = bytes.fromhex(case["image"])
        assert signing.statement(signing.hashlib.sha256(image).digest(), case["name"], case["version"],
                                 case["feature_spec"]).hex() == case["statement"]
        try:
            _, block = signing.split_signed_file(image + bytes.fromhex(case["block"]))
            signing.verify_image(image, block, trusted)
            verdict = "valid"
        except SignatureError:
            verdict = "invalid"
        assert verdict == case["verdict"], case["what"]


def test_cli_keys(data_dir, capsys):
    assert cli(["keys", "list"]) == 0
    assert "no signing key" in capsys.readouterr().out
    assert cli(["keys", "init"]) == 0
    first = capsys.readouterr().out.split()[0]
    assert cli(["keys", "export-public"]) == 0
    assert capsys.readouterr().out.startswith("-----BEGIN PUBLIC KEY-----")
    assert cli(["keys", "rotate"]) == 0
    out = capsys.readouterr().out
    assert f"retired {first}" in out
    assert cli(["keys", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in rows] == [STATUS_RETIRED, STATUS_ACTIVE]
    assert all("private" not in json.dumps(r).lower() for r in rows)


def test_revoked_version_is_marked(data_dir, trained, capsys):
    with Registry() as reg:
        mv = reg.add(name="pump", tflite=trained.tflite, card=trained.card, image=trained.image)
    assert cli(["model", "revoke", mv.ref, "--reason", "false alarms"]) == 0
    assert cli(["model", "show", mv.ref, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert shown["revoked"] is True and shown["signed_by"]
