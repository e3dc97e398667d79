"""What a deployment does with signatures (PROTOCOL.md 6.2), host side.

* The image's signature comes with it: a registry version's own (signed at registration, or now by
  the operator's active key), or the block after the image in an exported `.tmlm`.
* A revoked version is never deployed, whatever carries it.
* A signature that does not match its image is refused here, before a byte is sent; one by a key
  this operator does not know is sent anyway (another operator's key may be in the device's store:
  the device decides), with a note.
* A device with caps SIGNED and a provisioned trust store gets the block (XFER_SIGN) before COMMIT;
  an unsigned image is refused up front for it, in words, instead of failing at COMMIT.
"""

from __future__ import annotations

import logging

from app.deploy.finish import error_text
from app.domain.errors import DeviceError, ModelError
from app.protocol.codes import Caps, ErrorCode
from app.protocol.messages import Hello
from app.trust.signing import SignatureBlock, SignatureError, split_signed_file, verify_image

log = logging.getLogger(__name__)


def split_file(data: bytes) -> tuple[bytes, bytes | None]:
    """(image, signature block or None) of a `.tmlm` file's bytes (or of a bare image)."""
    image, block = split_signed_file(data)
    return image, (block.to_bytes() if block else None)


def registry_signature(registry, mv) -> bytes:
    """A registered version's signature block; refuses a revoked version."""
    if registry.revoked(mv):
        raise ModelError(f"{mv.ref} was revoked (`tinymlops model revoke`): it is never deployed again")
    return registry.signature(mv).to_bytes()


def check_file(image: bytes, block: bytes | None, name: str, version: int) -> str | None:
    """For an image from a file or bytes: refuse a revoked version or a signature that does not match;
    returns the signer's key id (hex) when signed."""
    from app.ml.registry import Registry

    with Registry() as reg:
        if (name, version) in set(reg.revocations()):
            raise ModelError(f"{name}@{version} was revoked (`tinymlops model revoke`): it is never deployed again")
        trusted = reg.keys.trusted()
    if block is None:
        return None
    parsed = SignatureBlock.from_bytes(block)
    if parsed.key_id not in trusted:
        log.info("%s@%d is signed by key %s, not one of this operator's: the device decides", name, version,
                 parsed.key_hex)
        return parsed.key_hex
    try:
        return verify_image(image, parsed, trusted)
    except SignatureError as exc:
        raise ModelError(f"{name}@{version}: {exc}") from exc


def refusal(hello: Hello, signature: bytes | None, device: str) -> DeviceError | None:
    """A provisioned device that verifies signatures is never sent an unsigned image."""
    if hello.caps & Caps.SIGNED and hello.trust_keys and signature is None:
        code = ErrorCode.BAD_SIGNATURE
        return DeviceError(f"device {device}: {code.name} ({int(code)}): {error_text(code)}: it takes only signed "
                           "images and this one carries no signature (deploy a registered version or an "
                           "exported .tmlm)", code=code)
    return None


def wants_signature(hello_caps: int, signature: bytes | None) -> bool:
    return bool(signature) and bool(hello_caps & Caps.SIGNED)
