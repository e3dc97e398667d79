"""The virtual device's trust store (PROTOCOL.md 6.2): signed images are activated, everything else
is refused at COMMIT with a clear code and the running model stays; keys are provisioned only while
the store is empty or by a trusted key; a signed revocation makes a version unacceptable."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.protocol import messages as m
from app.protocol.codes import MAX_TRUST_KEYS, Caps, CommitMode, ErrorCode
from app.trust import signing
from tests.vectors import trust_admin

from .test_device import Host, active_version, make_device


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


@pytest.fixture
def host(model_image) -> Host:
    return Host(make_device(model_image))


@pytest.fixture
def operator() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def secured(model_image, operator) -> Host:
    return Host(make_device(model_image, trust=[raw_public(operator)]))


def signed_deploy(host: Host, image: bytes, block: bytes | None, tid: int = 9) -> m.Message:
    host.push(image, tid, version=3)
    if block is not None:
        assert isinstance(host.one(m.XferSign(tid, block)), m.Ack)
    return host.one(m.XferCommit(tid, int(CommitMode.ACTIVATE), 0, 1))


def test_hello_says_whether_the_store_is_provisioned(host, secured):
    plain, sec = host.one(m.GetInfo()), secured.one(m.GetInfo())
    assert plain.caps & Caps.SIGNED and sec.caps & Caps.SIGNED and sec.caps & Caps.TRUST_ADMIN
    assert plain.trust_keys == 0 and sec.trust_keys == 1


def test_a_signed_image_is_activated(secured, model_image_v3, operator):
    block = signing.sign_image(model_image_v3, operator).to_bytes()
    assert isinstance(signed_deploy(secured, model_image_v3, block), m.Latency)
    assert active_version(secured) == 3


def _bad_cases(image: bytes, operator: Ed25519PrivateKey) -> dict[str, tuple[bytes, bytes | None]]:
    good = signing.sign_image(image, operator)
    flipped = bytearray(good.signature)
    flipped[5] ^= 0x10
    stranger = Ed25519PrivateKey.generate()
    return {
        "unsigned": (image, None),
        "flipped signature bit": (image, signing.SignatureBlock(good.key_id, bytes(flipped)).to_bytes()),
        "unknown key": (image, signing.sign_image(image, stranger).to_bytes()),
        "bad magic": (image, b"XXXX" + good.to_bytes()[4:]),
    }


@pytest.mark.parametrize("case", ["unsigned", "flipped signature bit", "unknown key", "bad magic"])
def test_bad_signatures_are_refused_and_the_model_stays(secured, model_image_v3, operator, case):
    image, block = _bad_cases(model_image_v3, operator)[case]
    before = secured.one(m.GetInfo())
    reply = signed_deploy(secured, image, block)
    assert isinstance(reply, m.Error) and reply.code == ErrorCode.BAD_SIGNATURE, reply
    after = secured.one(m.GetInfo())
    assert (after.model_version, after.model_sha, after.prev_version) == \
        (before.model_version, before.model_sha, before.prev_version)


def test_a_signature_for_another_image_is_refused(secured, model_image, model_image_v3, operator):
    other = signing.sign_image(model_image, operator).to_bytes()  # valid, but over v2's bytes
    reply = signed_deploy(secured, model_image_v3, other)
    assert isinstance(reply, m.Error) and reply.code == ErrorCode.BAD_SIGNATURE
    assert active_version(secured) == 2


def test_provisioning_rules(host, operator):
    first, second = raw_public(operator), raw_public(Ed25519PrivateKey.generate())
    # empty store: the first key is taken as it is
    assert host.one(m.TrustAdd(first, b"\0" * 80)).trust_keys == 1
    # then only with a signature by a trusted key
    stranger = Ed25519PrivateKey.generate()
    forged = signing.sign_statement(signing.trust_add_statement(second), stranger).to_bytes()
    assert host.error(m.TrustAdd(second, forged)) == ErrorCode.BAD_SIGNATURE
    assert host.error(m.TrustAdd(second, b"\0" * 80)) == ErrorCode.BAD_SIGNATURE
    auth = signing.sign_statement(signing.trust_add_statement(second), operator).to_bytes()
    assert host.one(m.TrustAdd(second, auth)).trust_keys == 2
    # bounded
    for _ in range(MAX_TRUST_KEYS - 2):
        extra = raw_public(Ed25519PrivateKey.generate())
        host.one(m.TrustAdd(extra, signing.sign_statement(signing.trust_add_statement(extra), operator).to_bytes()))
    extra = raw_public(Ed25519PrivateKey.generate())
    auth = signing.sign_statement(signing.trust_add_statement(extra), operator).to_bytes()
    assert host.error(m.TrustAdd(extra, auth)) == ErrorCode.TOO_LARGE


def test_a_revoked_version_is_refused_even_when_validly_signed(secured, model_image_v3, operator):
    forged = signing.sign_statement(signing.revoke_statement("pump-ae", 3), Ed25519PrivateKey.generate())
    assert secured.error(m.Revoke("pump-ae", 3, forged.to_bytes())) == ErrorCode.BAD_SIGNATURE
    auth = signing.sign_statement(signing.revoke_statement("pump-ae", 3), operator).to_bytes()
    assert isinstance(secured.one(m.Revoke("pump-ae", 3, auth)), m.Ack)
    block = signing.sign_image(model_image_v3, operator).to_bytes()
    reply = signed_deploy(secured, model_image_v3, block)
    assert isinstance(reply, m.Error) and reply.code == ErrorCode.REVOKED
    assert active_version(secured) == 2


def test_an_unprovisioned_device_takes_unsigned_images(host, model_image_v3):
    assert isinstance(signed_deploy(host, model_image_v3, None), m.Latency)
    assert hashlib.sha256(model_image_v3).digest()[:8] == host.one(m.GetInfo()).model_sha


def test_the_trust_admin_golden_vectors(host):
    """The cases of tests/vectors/signatures.json, as the C core takes them (firmware/tests/test_device.c
    and tests/firmware/test_qemu_signed.py): same statements, same verdicts."""
    for case in trust_admin.cases()["admin"]:
        statement = (signing.revoke_statement(case["name"], case["version"]) if case["op"] == "revoke"
                     else signing.trust_add_statement(bytes.fromhex(case["public_key"])))
        assert statement.hex() == case["statement"], case["what"]

    def ask(msg: m.Message) -> m.Message | int:
        reply = host.one(msg)
        return reply.code if isinstance(reply, m.Error) else reply

    keys = trust_admin.replay(ask)
    before = host.one(m.GetInfo())
    assert before.trust_keys == keys
    assert trust_admin.deploy_revoked(ask) == ErrorCode.REVOKED
    assert host.one(m.GetInfo()).model_sha == before.model_sha
