"""The C core verifies signatures (PROTOCOL.md 6.2) on the emulated Cortex-M4: a firmware built with
this operator's public key (`make TRUST_KEYS=operator.pem`) takes a registered version, deployed from
the CLI over serial with its signature, and refuses an unsigned or foreign-signed image at COMMIT
with BAD_SIGNATURE, keeping its model; keys and revocations taken over the protocol (TRUST_ADD,
REVOKE) get the same verdicts as on the virtual device and survive a reboot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.domain.errors import DeviceError
from app.protocol import messages as m
from app.protocol.codes import Caps, ErrorCode, EventCode
from app.protocol.image import sha256
from app.trust import signing
from tests.firmware.conftest import DATA, PORT_DIR
from tests.firmware.helpers import Device
from tests.fixtures.qemu import ROOT, boot, build
from tests.vectors import trust_admin

# A serial deployment of a 12 KB image to the emulator takes about a second; allow for a loaded CI.
CLI_TIMEOUT_S = 120
# One request to the emulator: an Ed25519 verification takes well under a second of emulated time.
REQUEST_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def operator(tmp_path_factory) -> Path:
    """A data dir with an operator key, and the firmware variant that trusts it."""
    data = tmp_path_factory.mktemp("operator")
    env = {**os.environ, "TINYMLOPS_DATA_DIR": str(data), "TINYMLOPS_KEYRING": "off"}
    pem = data / "operator.pem"
    subprocess.run([sys.executable, "-m", "app", "keys", "export-public", str(pem)], check=True, cwd=ROOT, env=env,
                   capture_output=True, timeout=CLI_TIMEOUT_S)
    build(f"TRUST_KEYS={pem}")
    return data


@pytest.fixture
def provisioned(operator):
    yield from boot(PORT_DIR / "build" / "trusted-operator" / "tinymlops.elf")


def _cli(data: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TINYMLOPS_DATA_DIR": str(data), "TINYMLOPS_KEYRING": "off"}
    return subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=CLI_TIMEOUT_S)


def test_a_provisioned_c_device_takes_only_signed_images(operator, provisioned, tmp_path):
    image = (DATA / "factory_v2.tmlm").read_bytes()
    with Device(provisioned.url) as dev:
        hello = dev.request(m.GetInfo()).msg
        assert hello.caps & Caps.SIGNED and hello.trust_keys == 1
        before = hello.model_sha
    # unsigned: refused by the host before a byte, in words
    (tmp_path / "unsigned.tmlm").write_bytes(image)
    proc = _cli(operator, "deploy", str(tmp_path / "unsigned.tmlm"), "--via", "serial", "--port", provisioned.url)
    assert proc.returncode != 0 and "only signed images" in proc.stdout + proc.stderr
    # signed by a key the device does not hold: the device refuses it at COMMIT
    stranger = signing.sign_image(image, Ed25519PrivateKey.generate()).to_bytes()
    (tmp_path / "foreign.tmlm").write_bytes(image + stranger)
    proc = _cli(operator, "deploy", str(tmp_path / "foreign.tmlm"), "--via", "serial", "--port", provisioned.url,
                "--json")
    assert proc.returncode != 0
    (result,) = json.loads(proc.stdout)
    assert result["error_code"] == ErrorCode.BAD_SIGNATURE, result
    with Device(provisioned.url) as dev:
        assert dev.request(m.GetInfo()).msg.model_sha == before
    # a registered version: signed by this operator, activated
    assert _cli(operator, "model", "import", str(DATA / "factory_v2.tmlm"), "--name", "pump").returncode == 0
    proc = _cli(operator, "deploy", "pump@latest", "--via", "serial", "--port", provisioned.url, "--json")
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(proc.stdout)
    assert result["outcome"] == "ok" and result["signed_by"]
    with Device(provisioned.url) as dev:
        after = dev.request(m.GetInfo()).msg
    assert after.model_name == "pump" and after.model_sha != before  # factory_v2's network, restamped pump@1


def test_the_c_core_takes_trust_admin_like_the_virtual_device(qemu_device):
    """TRUST_ADD and REVOKE on the emulated Cortex-M4 with the golden cases the virtual device passes
    (tests/vectors/trust_admin.py): the same verdicts, and what was taken is kept across a reboot
    (the store's journal): a revoked version is refused at COMMIT before and after it."""

    def ask(msg: m.Message) -> m.Message | int:
        try:
            return dev.request(msg, timeout=REQUEST_TIMEOUT_S).msg
        except DeviceError as exc:
            return exc.code

    with Device(qemu_device.url) as dev:
        hello = dev.request(m.GetInfo()).msg
        assert hello.caps & Caps.TRUST_ADMIN and hello.trust_keys == 0
        keys = trust_admin.replay(ask)
        assert trust_admin.deploy_revoked(ask) == ErrorCode.REVOKED
        dev.request(m.Reboot())
        dev.wait_for(m.Event, where=lambda e: e.code == EventCode.BOOTED)
        after = dev.request(m.GetInfo()).msg
        assert after.trust_keys == keys and after.model_sha == hello.model_sha
        assert trust_admin.deploy_revoked(ask, transfer_id=trust_admin.REVOKED_TRANSFER_ID + 1) == ErrorCode.REVOKED


def test_the_operator_provisions_and_revokes_on_the_c_core_over_serial(qemu_device, tmp_path, monkeypatch):
    """The operator's own commands against the emulated C core: `keys provision` over serial puts
    this operator's key into its empty store, a registered version deploys signed, and a revocation
    signed by the operator makes the device refuse that version, also after a reboot."""
    from app.deploy.provision import revoke
    from app.ml.registry import Registry

    data = tmp_path / "operator"
    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(data))
    monkeypatch.setenv("TINYMLOPS_KEYRING", "off")
    proc = _cli(data, "keys", "provision", "--via", "serial", "--port", qemu_device.url)
    assert proc.returncode == 0 and "holds 1 key(s)" in proc.stdout, proc.stderr
    assert _cli(data, "model", "import", str(DATA / "factory_v2.tmlm"), "--name", "pump").returncode == 0
    proc = _cli(data, "deploy", "pump@latest", "--via", "serial", "--port", qemu_device.url, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["signed_by"]
    assert revoke("pump", 1, via="serial", port=qemu_device.url)
    with Registry() as reg:
        mv = reg.resolve("pump@1")
        image, block = reg.image_bytes(mv), reg.signature(mv).to_bytes()

    def ask(msg: m.Message) -> m.Message | int:
        try:
            return dev.request(msg, timeout=REQUEST_TIMEOUT_S).msg
        except DeviceError as exc:
            return exc.code

    with Device(qemu_device.url) as dev:
        before = dev.request(m.GetInfo()).msg
        for transfer_id in (71, 72):  # before and after a reboot
            assert _push_signed(ask, image, block, transfer_id) == ErrorCode.REVOKED
            assert dev.request(m.GetInfo()).msg.model_sha == before.model_sha
            dev.request(m.Reboot())
            dev.wait_for(m.Event, where=lambda e: e.code == EventCode.BOOTED)
        assert dev.request(m.GetInfo()).msg.trust_keys == 1


def _push_signed(ask, image: bytes, block: bytes, transfer_id: int) -> m.Message | int:
    """Push `image` in 4 KB chunks with its signature block and commit it; the COMMIT reply."""
    chunk = 4096
    status = ask(m.XferBegin(transfer_id, len(image), chunk, 0, sha256(image), "pump", 1))
    assert isinstance(status, m.XferStatus), status
    for i in range(status.n_chunks):
        data = image[i * chunk:(i + 1) * chunk]
        assert isinstance(ask(m.XferChunk(transfer_id, i, zlib.crc32(data) & 0xFFFFFFFF, data)), m.Ack)
    assert isinstance(ask(m.XferSign(transfer_id, block)), m.Ack)
    return ask(m.XferCommit(transfer_id, 1, 0, 1))
