"""Replays the trust-administration golden cases of signatures.json (PROTOCOL.md 6.2) against any
device implementation, so the virtual device (tests/fleet/test_device_trust.py) and the C core on
QEMU (tests/firmware/test_qemu_signed.py) are held to the same verdicts; the host build of the C
core runs the same cases in firmware/tests/test_device.c."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from pathlib import Path

from app.protocol import messages as m
from app.protocol.codes import CommitMode, ErrorCode
from app.protocol.image import sha256

SIGNATURES = Path(__file__).with_name("signatures.json")
NO_AUTH = b"\0" * 80
# Transfer id of the revoked image's deployment (any value the tests do not use otherwise).
REVOKED_TRANSFER_ID = 4242

# Sends one request; returns the reply, or the error code of an ERROR reply.
Ask = Callable[[m.Message], "m.Message | int"]


def cases() -> dict:
    return json.loads(SIGNATURES.read_text())


def trusted_key() -> bytes:
    return bytes.fromhex(cases()["trusted"][0]["public"])


def _request(case: dict) -> m.Message:
    auth = bytes.fromhex(case["auth"])
    if case["op"] == "revoke":
        return m.Revoke(case["name"], case["version"], auth)
    return m.TrustAdd(bytes.fromhex(case["public_key"]), auth)


def replay(ask: Ask) -> int:
    """On a device whose trust store is empty: a revocation is refused (no key to check it), the
    first key is taken without auth, then every admin case gets its verdict and a further key
    without auth is refused. Returns the number of keys the device then holds."""
    admin = cases()["admin"]
    revoke = next(c for c in admin if c["op"] == "revoke" and c["verdict"] == "valid")
    assert ask(_request(revoke)) == ErrorCode.BAD_SIGNATURE
    hello = ask(m.TrustAdd(trusted_key(), NO_AUTH))
    assert isinstance(hello, m.Hello) and hello.trust_keys == 1, hello
    keys = 1
    for case in admin:
        reply = ask(_request(case))
        if case["verdict"] != "valid":
            assert reply == ErrorCode.BAD_SIGNATURE, (case["what"], reply)
        elif case["op"] == "revoke":
            assert isinstance(reply, m.Ack), (case["what"], reply)
        else:
            keys += 1
            assert isinstance(reply, m.Hello) and reply.trust_keys == keys, (case["what"], reply)
    assert ask(m.TrustAdd(trusted_key(), NO_AUTH)) == ErrorCode.BAD_SIGNATURE  # provisioned: auth needed
    return keys


def deploy_revoked(ask: Ask, transfer_id: int = REVOKED_TRANSFER_ID) -> m.Message | int:
    """Push the cases' valid image (pump v4, validly signed, revoked by replay()) in one chunk with
    its signature block and commit it; returns the COMMIT reply (REVOKED expected)."""
    valid = cases()["cases"][0]
    image, block = bytes.fromhex(valid["image"]), bytes.fromhex(valid["block"])
    status = ask(m.XferBegin(transfer_id, len(image), len(image), 0, sha256(image), valid["name"], valid["version"]))
    assert isinstance(status, m.XferStatus), status
    assert isinstance(ask(m.XferChunk(transfer_id, 0, zlib.crc32(image) & 0xFFFFFFFF, image)), m.Ack)
    assert isinstance(ask(m.XferSign(transfer_id, block)), m.Ack)
    return ask(m.XferCommit(transfer_id, int(CommitMode.ACTIVATE), 0, 1))
