"""Signed images (PROTOCOL.md 6.2) on provisioned devices of every implementation: a registered
version goes out signed and is activated; an unsigned image or one whose signature block does not
match is refused at COMMIT with BAD_SIGNATURE, and the running model stays."""

from __future__ import annotations

import zlib

import pytest

from app.deploy import api
from app.domain.errors import DeviceError
from app.ml.registry import Registry
from app.protocol import messages as m
from app.protocol import topics
from app.protocol.codes import Caps, DeviceState, ErrorCode
from app.protocol.image import ModelImage, sha256

CHUNK = 1024


@pytest.fixture
def provisioned() -> bool:
    return True


@pytest.fixture
def registered(dut, model_image_v3):
    """The v3 model in this test's registry, signed by its operator key (the one the device trusts)."""
    img = ModelImage.from_bytes(model_image_v3)
    with Registry() as reg:
        mv = reg.add(name="pump-ae", tflite=img.tflite, card={"ops": ["FULLY_CONNECTED"], "arena": 4096, "fit": {}},
                     image=img)
        return mv, reg.image_bytes(mv), reg.signature(mv)


def _push(host, image: bytes, transfer_id: int, block: bytes | None) -> m.Message:
    host.request(m.XferBegin(transfer_id=transfer_id, image_size=len(image), chunk_size=CHUNK, flags=0,
                             sha256=sha256(image), model_name="pump-ae", model_version=3, source=""))
    for i in range(0, len(image), CHUNK):
        data = image[i:i + CHUNK]
        host.request(m.XferChunk(transfer_id, i // CHUNK, zlib.crc32(data), data))
    if block is not None:
        host.request(m.XferSign(transfer_id, block))
    return host.request(m.XferCommit(transfer_id, 1, 0, 0))


def test_provisioned_device_says_so(dut, host):
    status = host.wait_for(topics.STATUS, m.Hello)
    assert status.caps & Caps.SIGNED and status.trust_keys == 1


def test_signed_version_deploys(dut, host, registered):
    mv, image, _block = registered
    (result,) = api.deploy(mv.ref, [dut.device_id], via="mqtt", broker=dut.url, fit_gate=None, bench_count=1)
    assert result.outcome == "ok", result.error_message
    assert host.request(m.GetInfo()).model_sha == sha256(image)[:8]


def test_unsigned_image_is_refused(dut, host, registered):
    _mv, image, _block = registered
    with pytest.raises(DeviceError) as err:
        _push(host, image, 41, None)
    assert err.value.code == ErrorCode.BAD_SIGNATURE
    info = host.request(m.GetInfo())
    assert info.model_version == 1 and info.state == DeviceState.ONLINE


def test_signature_of_another_image_is_refused(dut, host, registered, model_factory):
    _mv, image, block = registered
    other = model_factory.with_version(image, 4)  # META says version 4: the signed statement differs
    with pytest.raises(DeviceError) as err:
        _push(host, other, 42, block.to_bytes())
    assert err.value.code == ErrorCode.BAD_SIGNATURE
    assert host.request(m.GetInfo()).model_version == 1
