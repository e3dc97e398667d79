"""Signed model images (firmware/PROTOCOL.md section 6.2): what is signed and how a signature travels.

A signature vouches for one deployable version: the image's SHA-256 *together with* its family
name, version and feature specification, so a valid signature cannot be moved onto another image,
nor an image re-labelled as another version or fed features it was not trained for. Every field
of the statement is one a device can read from the image it received (META section), so a device
rebuilds the statement itself and trusts nothing the sender adds beside the image.

Ed25519 (RFC 8032) through `cryptography`; the signature names its key by a short id (the first
8 bytes of SHA-256 over the raw 32-byte public key), which is the fingerprint shown to people.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from app.domain.errors import ModelError
from app.protocol.image import FEATURE_SPEC_ID, ModelImage

# Domain separation: a signature over these bytes can never be mistaken for one over anything else.
STATEMENT_TAG = b"tinymlops-image-v1\x00"
BLOCK_MAGIC = b"TMSG"
BLOCK_FORMAT = 1
ALG_ED25519 = 1
KEY_ID_LEN = 8
SIGNATURE_LEN = 64
PUBLIC_KEY_LEN = 32
# magic, format u8, algorithm u8, reserved u16, key id, signature
_BLOCK = struct.Struct(f"<4sBBH{KEY_ID_LEN}s{SIGNATURE_LEN}s")
BLOCK_SIZE = _BLOCK.size  # 80 bytes


class SignatureError(ModelError):
    """A signature is missing, malformed, by an unknown key, or does not match the image."""


def key_id(public_raw: bytes) -> bytes:
    """The short id of a raw Ed25519 public key (8 bytes; its hex is the fingerprint people see)."""
    if len(public_raw) != PUBLIC_KEY_LEN:
        raise SignatureError(f"an Ed25519 public key has {PUBLIC_KEY_LEN} bytes, not {len(public_raw)}")
    return hashlib.sha256(public_raw).digest()[:KEY_ID_LEN]


def statement(image_sha256: bytes, name: str, version: int, feature_spec: int = FEATURE_SPEC_ID) -> bytes:
    """The exact bytes a signature covers (PROTOCOL.md 6.2)."""
    raw_name = name.encode("utf-8")
    if len(image_sha256) != 32:
        raise SignatureError("an image SHA-256 has 32 bytes")
    if len(raw_name) > 255:
        raise SignatureError("model name longer than 255 bytes")
    return (STATEMENT_TAG + image_sha256 + struct.pack("<IH", version, feature_spec)
            + bytes([len(raw_name)]) + raw_name)


def image_statement(image_bytes: bytes) -> bytes:
    """The statement for an image, from the image alone (as a device rebuilds it)."""
    img = ModelImage.from_bytes(image_bytes)
    return statement(hashlib.sha256(image_bytes).digest(), img.name, img.version, FEATURE_SPEC_ID)


@dataclass(frozen=True)
class SignatureBlock:
    """80 bytes on the wire and in files: who signed (key id) and the Ed25519 signature."""

    key_id: bytes
    signature: bytes

    @property
    def key_hex(self) -> str:
        return self.key_id.hex()

    def to_bytes(self) -> bytes:
        return _BLOCK.pack(BLOCK_MAGIC, BLOCK_FORMAT, ALG_ED25519, 0, self.key_id, self.signature)

    @classmethod
    def from_bytes(cls, data: bytes) -> SignatureBlock:
        if len(data) != BLOCK_SIZE:
            raise SignatureError(f"signature block holds {len(data)} bytes, expected {BLOCK_SIZE} (truncated?)")
        magic, fmt, alg, _reserved, kid, sig = _BLOCK.unpack(data)
        if magic != BLOCK_MAGIC:
            raise SignatureError("not a Tiny-MLOps signature block (bad magic)")
        if fmt != BLOCK_FORMAT:
            raise SignatureError(f"signature block format {fmt} not supported")
        if alg != ALG_ED25519:
            raise SignatureError(f"signature algorithm {alg} not supported (1 = Ed25519)")
        return cls(kid, sig)


def sign_image(image_bytes: bytes, private_key: Ed25519PrivateKey) -> SignatureBlock:
    public_raw = private_key.public_key().public_bytes_raw()
    return SignatureBlock(key_id(public_raw), private_key.sign(image_statement(image_bytes)))


def verify_image(image_bytes: bytes, block: SignatureBlock, trusted: dict[bytes, bytes]) -> str:
    """Check `block` over `image_bytes` against `trusted` (key id -> raw public key).

    Returns the signer's key id in hex; raises SignatureError saying which check failed.
    """
    try:
        return verify_statement(image_statement(image_bytes), block, trusted)
    except SignatureError as exc:
        if block.key_id not in trusted:
            raise
        raise SignatureError(
            f"signature by key {block.key_hex} does not match this image (altered, or signed for "
            "another name, version or feature spec)") from exc


def split_signed_file(data: bytes) -> tuple[bytes, SignatureBlock | None]:
    """An exported `.tmlm` is the image followed by its signature block (PROTOCOL.md 6.2).

    The image's own header says where it ends; nothing after it means unsigned, anything else
    after it must be exactly one signature block.
    """
    if len(data) < 16:
        raise ModelError("file shorter than a model image header")
    total = struct.unpack_from("<I", data, 8)[0]
    if total > len(data):
        raise ModelError(f"image says {total} bytes but the file holds {len(data)} (truncated?)")
    image, rest = data[:total], data[total:]
    if not rest:
        return image, None
    return image, SignatureBlock.from_bytes(rest)


# ----- device administration statements (PROTOCOL.md 6.2): keys added and versions revoked ------
TRUST_ADD_TAG = b"tinymlops-trust-add-v1\x00"
REVOKE_TAG = b"tinymlops-revoke-v1\x00"


def trust_add_statement(public_raw: bytes) -> bytes:
    if len(public_raw) != PUBLIC_KEY_LEN:
        raise SignatureError(f"an Ed25519 public key has {PUBLIC_KEY_LEN} bytes")
    return TRUST_ADD_TAG + public_raw


def revoke_statement(name: str, version: int) -> bytes:
    raw_name = name.encode("utf-8")
    if len(raw_name) > 255:
        raise SignatureError("model name longer than 255 bytes")
    return REVOKE_TAG + bytes([len(raw_name)]) + raw_name + struct.pack("<I", version)


def sign_statement(message: bytes, private_key: Ed25519PrivateKey) -> SignatureBlock:
    public_raw = private_key.public_key().public_bytes_raw()
    return SignatureBlock(key_id(public_raw), private_key.sign(message))


def verify_statement(message: bytes, block: SignatureBlock, trusted: dict[bytes, bytes]) -> str:
    """Like verify_image, for a statement already built (trust-add, revoke)."""
    public_raw = trusted.get(block.key_id)
    if public_raw is None:
        raise SignatureError(f"signed by key {block.key_hex}, which this side does not trust")
    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(block.signature, message)
    except InvalidSignature as exc:
        raise SignatureError(f"signature by key {block.key_hex} does not match") from exc
    return block.key_hex
