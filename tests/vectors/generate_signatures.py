"""Regenerates tests/vectors/signatures.json: signed-image golden vectors (firmware/PROTOCOL.md 6.2).

Run `python -m tests.vectors.generate_signatures` only when section 6.2 changes. Keys come from
fixed seeds (RFC 8032 allows any 32-byte seed), so the file is reproducible; Ed25519 signatures are
deterministic. Each case gives the image, the signature block appended after it in a file, the
exact statement bytes, and the verdict every implementation must reach with `trusted` as its
trust store.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.protocol.image import ModelImage
from app.trust import signing

HERE = Path(__file__).parent
TRUSTED_SEED = bytes(range(32))
UNTRUSTED_SEED = bytes(range(32, 64))
# The key the trust-administration cases add (TRUST_ADD) to a store holding the trusted key.
ADDED_SEED = bytes(range(64, 96))


def _image(version: int = 4) -> bytes:
    n = 4
    return ModelImage("pump", version, 2.5, np.zeros(n, "f4"), np.ones(n, "f4"), bytes(range(48)),
                      np.arange(n, dtype="f4"), 0.25, 0.01).to_bytes()


def cases() -> dict:
    trusted = Ed25519PrivateKey.from_private_bytes(TRUSTED_SEED)
    untrusted = Ed25519PrivateKey.from_private_bytes(UNTRUSTED_SEED)
    image = _image()
    good = signing.sign_image(image, trusted)
    tampered = bytearray(image)
    tampered[-20] ^= 0x01  # inside the self-test section: still a well-formed image
    bad_sig = bytearray(good.signature)
    bad_sig[0] ^= 0x01
    restamped = _image(version=5)

    def case(what: str, img: bytes, block: bytes, verdict: str) -> dict:
        parsed = ModelImage.from_bytes(img)
        return {"what": what, "image": img.hex(), "block": block.hex(), "name": parsed.name,
                "version": parsed.version, "feature_spec": 1, "verdict": verdict,
                "statement": signing.statement(hashlib.sha256(img).digest(), parsed.name, parsed.version).hex()}

    public = trusted.public_key().public_bytes_raw()
    added = Ed25519PrivateKey.from_private_bytes(ADDED_SEED).public_key().public_bytes_raw()

    def admin(what: str, kind: str, statement: bytes, key, verdict: str, **fields) -> dict:
        return {"what": what, "op": kind, **fields, "statement": statement.hex(),
                "auth": signing.sign_statement(statement, key).to_bytes().hex(), "verdict": verdict}

    add_statement = signing.trust_add_statement(added)
    revoke_statement = signing.revoke_statement("pump", 4)
    return {
        "about": "PROTOCOL.md 6.2: Ed25519 over the statement; key id = SHA-256(public)[:8]",
        "trusted": [{"key_id": signing.key_id(public).hex(), "public": public.hex()}],
        "cases": [
            case("valid", image, good.to_bytes(), "valid"),
            case("tampered image (one bit in the SELFTEST section)", bytes(tampered), good.to_bytes(), "invalid"),
            case("flipped signature bit", image, signing.SignatureBlock(good.key_id, bytes(bad_sig)).to_bytes(),
                 "invalid"),
            case("signed by a key not in the trust store", image,
                 signing.sign_image(image, untrusted).to_bytes(), "invalid"),
            case("truncated signature block", image, good.to_bytes()[:-1], "invalid"),
            case("the same signature on the image restamped as version 5", restamped, good.to_bytes(), "invalid"),
        ],
        # TRUST_ADD and REVOKE on a store that holds `trusted` (PROTOCOL.md 6.2): the statement each
        # auth block signs and whether a device takes it. Replayed in order, the valid REVOKE makes
        # the "valid" image case above (pump v4) refused with REVOKED.
        "admin": [
            admin("trust-add signed by the trusted key", "trust_add", add_statement, trusted, "valid",
                  public_key=added.hex()),
            admin("trust-add signed by an untrusted key", "trust_add", add_statement, untrusted, "invalid",
                  public_key=added.hex()),
            admin("revoke signed by an untrusted key", "revoke", revoke_statement, untrusted, "invalid",
                  name="pump", version=4),
            admin("revoke signed by the trusted key", "revoke", revoke_statement, trusted, "valid",
                  name="pump", version=4),
        ],
    }


# The C device test (firmware/tests/test_device.c) deploys this image signed by the trusted key.
FIRMWARE_TEST_IMAGE = HERE.parents[1] / "firmware" / "tests" / "data" / "fw_test_v2.tmlm"


if __name__ == "__main__":
    (HERE / "signatures.json").write_text(json.dumps(cases(), indent=1) + "\n")
    key = Ed25519PrivateKey.from_private_bytes(TRUSTED_SEED)
    block = signing.sign_image(FIRMWARE_TEST_IMAGE.read_bytes(), key)
    FIRMWARE_TEST_IMAGE.with_suffix(".tmlm.sig").write_bytes(block.to_bytes())
