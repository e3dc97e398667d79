"""The STM32F4 port (firmware/ports/stm32f4) on QEMU's netduinoplus2 (STM32F405, the F446's core
and USART): it boots through the clock tree's bounded waits (QEMU models no RCC, so the PLL never
locks), answers on USART2 (the second -serial), and takes a deployment from the application over
`--via serial`, keeping it across a reset in its SRAM-backed store."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.domain.errors import DeviceError
from app.protocol import messages as m
from app.protocol.codes import ErrorCode, EventCode, LatencyFlags, MsgType
from app.protocol.image import sha256
from tests.firmware.conftest import DATA, ROOT
from tests.firmware.helpers import Device
from tests.firmware.test_qemu_deploy import FACTORY, SCORE_CHANGE, _assert_scores_match_tflm, _cli
from tests.firmware.test_qemu_device import _send_chunks
from tests.fixtures.qemu import (
    STM32F4_DIR,
    STM32F4_QEMU_ARENA_SIZE,
    STM32F4_QEMU_SLOT_SIZE,
    QemuDevice,
    boot_stm32f4,
    build,
)

PORT_DIR = STM32F4_DIR
# The signature vectors' trusted key (tests/vectors/signatures.json) signed fw_test_v2.tmlm.sig.
SIGNATURES = ROOT / "tests" / "vectors" / "signatures.json"
# An Ed25519 SubjectPublicKeyInfo is this DER prefix and the 32-byte key (RFC 8410).
ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
CHUNK = 4096


@pytest.fixture(scope="session")
def trusted_elf(tmp_path_factory) -> Path:
    """The images provisioned with the signature vectors' key (make TRUST_KEYS=vectors.pem)."""
    public = bytes.fromhex(json.loads(SIGNATURES.read_text())["trusted"][0]["public"])
    pem = tmp_path_factory.mktemp("keys") / "vectors.pem"
    body = base64.encodebytes(ED25519_SPKI_PREFIX + public).decode()
    pem.write_text(f"-----BEGIN PUBLIC KEY-----\n{body}-----END PUBLIC KEY-----\n")
    build(f"TRUST_KEYS={pem}", port_dir=PORT_DIR)
    return PORT_DIR / "build" / "qemu-trusted-vectors" / "tinymlops.elf"


@pytest.fixture
def trusted_device(trusted_elf: Path) -> Iterator[QemuDevice]:
    yield from boot_stm32f4(trusted_elf)


def _push_signed(dev: Device, image: bytes, transfer_id: int, block: bytes | None) -> m.Message:
    dev.request(m.XferBegin(transfer_id, len(image), CHUNK, 0, sha256(image), "x", 0))
    if block is not None:
        # SerialChannel.request knows no reply type for XFER_SIGN yet (REPLY_TYPES): send, await the ACK
        dev.drain()
        dev.channel.send(m.XferSign(transfer_id, block))
        dev.wait_for(m.Ack, where=lambda a: a.ref_type == MsgType.XFER_SIGN)
    _send_chunks(dev, image, transfer_id, CHUNK, list(range(-(-len(image) // CHUNK))))
    return dev.request(m.XferCommit(transfer_id, 1, 2, 5), timeout=30).msg


def test_boots_and_answers_on_usart2(stm32f4_device):
    with Device(stm32f4_device.url) as dev:
        hello = dev.request(m.GetInfo()).msg
        assert (hello.device_id, hello.profile) == ("stm32f4-qemu", "stm32f446")
        assert (hello.slot_size, hello.ram_budget) == (STM32F4_QEMU_SLOT_SIZE, STM32F4_QEMU_ARENA_SIZE)
        assert hello.model_name == "factory" and hello.model_version >= 1
        _assert_scores_match_tflm(dev, FACTORY.read_bytes(), hello.model_version)
        lat = dev.request(m.Benchmark(10)).msg
        assert isinstance(lat, m.Latency) and lat.n == 10 and lat.flags & LatencyFlags.EMULATED
        assert 0 < lat.min_us <= lat.median_us <= lat.max_us


def test_deploy_via_serial_rollback_and_reset(stm32f4_device, tmp_path):
    new = DATA / "factory_v2.tmlm"  # the factory network with other scores (test_qemu_deploy.py)
    with Device(stm32f4_device.url) as dev:
        v1 = dev.request(m.GetInfo()).msg.model_version
        before = _assert_scores_match_tflm(dev, FACTORY.read_bytes(), v1)

    report = _cli("deploy", str(new), "--via", "serial", "--port", stm32f4_device.url, "--bench", "20",
                  data_dir=tmp_path)[0]
    assert report["outcome"] == "ok" and report["model_version"] == 2
    assert report["emulated"] is True and report["bench_n"] == 20
    assert report["device_deploy_us"] > 0 and report["load_us"] > 0
    assert 0 < report["inference_min_us"] <= report["inference_median_us"] <= report["inference_max_us"]

    with Device(stm32f4_device.url) as dev:
        hello = dev.request(m.GetInfo()).msg
        assert (hello.model_version, hello.prev_version, hello.trial) == (2, v1, 0)
        after = _assert_scores_match_tflm(dev, new.read_bytes(), 2)
        assert min(after) > SCORE_CHANGE * max(before), f"scores did not change: v1 {before}, v2 {after}"
        # a reset (SYSRESETREQ) keeps the store: it lives in SRAM the start-up code never clears
        dev.request(m.Reboot())
        booted = dev.wait_for(m.Event, where=lambda e: e.code == EventCode.BOOTED)
        assert booted.message == "booted"
        hello = dev.request(m.GetInfo()).msg
        assert (hello.model_version, hello.prev_version) == (2, v1)

    rolled = _cli("rollback", "--via", "serial", "--port", stm32f4_device.url, data_dir=tmp_path)[0]
    assert rolled["ok"] and rolled["model_version"] == v1
    with Device(stm32f4_device.url) as dev:
        _assert_scores_match_tflm(dev, FACTORY.read_bytes(), v1)


def test_signed_image_is_verified_on_the_device(trusted_device):
    """Ed25519 verification (the deepest stack of the firmware) runs on the port's stack; an unsigned
    or altered image is refused and the running model stays."""
    image = (DATA / "fw_test_v2.tmlm").read_bytes()
    block = (DATA / "fw_test_v2.tmlm.sig").read_bytes()
    with Device(trusted_device.url) as dev:
        hello = dev.request(m.GetInfo()).msg
        assert hello.trust_keys == 1
        with pytest.raises(DeviceError) as info:
            _push_signed(dev, image, 61, None)
        assert info.value.code == ErrorCode.BAD_SIGNATURE
        altered = bytearray(block)
        altered[40] ^= 0x01
        with pytest.raises(DeviceError) as info:
            _push_signed(dev, image, 62, bytes(altered))
        assert info.value.code == ErrorCode.BAD_SIGNATURE
        assert dev.request(m.GetInfo()).msg.model_version == hello.model_version
        lat = _push_signed(dev, image, 63, block)
        assert isinstance(lat, m.Latency) and lat.model_version == 2
        after = dev.request(m.GetInfo()).msg
        assert (after.model_name, after.model_version) == ("fw-test", 2)
        assert dev.telemetry(1)[0].model_version == 2
        # ~12 KB of stack for the verification: an overflow would hit the MPU guard (no reply) or, without
        # it, the model store below the stack; the store still holds the signed model after a reset
        dev.request(m.Reboot())
        dev.wait_for(m.Event, where=lambda e: e.code == EventCode.BOOTED)
        again = dev.request(m.GetInfo()).msg
        assert (again.model_version, again.prev_version) == (2, hello.model_version)
