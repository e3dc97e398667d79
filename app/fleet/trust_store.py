"""A virtual device's trust store (PROTOCOL.md 6.2): the public keys it accepts images from and the
versions it refuses.

Rules, the same on every device implementation:
* an empty store means "not provisioned": images are taken unsigned (HELLO says trust_keys 0, and
  the application shows it), and the first TRUST_ADD is taken without authorisation;
* a provisioned store refuses at COMMIT any image without a signature, by an unknown key, or whose
  signature does not cover its SHA-256, name, version and feature spec (BAD_SIGNATURE), and any
  revoked version (REVOKED); the running model stays;
* a further TRUST_ADD, and every REVOKE, must be signed by a key already in the store.
"""

from __future__ import annotations

from collections import OrderedDict

from app.domain.errors import ModelError
from app.fleet.model_slot import Refused
from app.protocol.codes import MAX_REVOCATIONS, MAX_TRUST_KEYS, ErrorCode
from app.protocol.image import ModelImage
from app.trust import signing
from app.trust.signing import SignatureBlock, SignatureError


class TrustStore:
    def __init__(self, public_keys: list[bytes] | None = None) -> None:
        self._keys: dict[bytes, bytes] = {}
        self._revoked: OrderedDict[tuple[str, int], None] = OrderedDict()
        for key in public_keys or []:
            self._add(key)

    @property
    def size(self) -> int:
        return len(self._keys)

    def _add(self, public_raw: bytes) -> None:
        kid = signing.key_id(bytes(public_raw))
        if kid in self._keys:
            return
        if len(self._keys) >= MAX_TRUST_KEYS:
            raise Refused(ErrorCode.TOO_LARGE, f"trust store full ({MAX_TRUST_KEYS} keys)")
        self._keys[kid] = bytes(public_raw)

    @staticmethod
    def _block(raw: bytes) -> SignatureBlock:
        try:
            return SignatureBlock.from_bytes(bytes(raw))
        except SignatureError as exc:
            raise Refused(ErrorCode.BAD_SIGNATURE, str(exc)) from exc

    def add_key(self, public_raw: bytes, auth: bytes) -> None:
        if self._keys:
            try:
                signing.verify_statement(signing.trust_add_statement(bytes(public_raw)), self._block(auth), self._keys)
            except SignatureError as exc:
                raise Refused(ErrorCode.BAD_SIGNATURE, f"key not added: {exc}") from exc
        try:
            self._add(public_raw)
        except SignatureError as exc:
            raise Refused(ErrorCode.BAD_ARGUMENT, str(exc)) from exc

    def revoke(self, name: str, version: int, auth: bytes) -> None:
        if not self._keys:
            raise Refused(ErrorCode.BAD_SIGNATURE, "no trusted key to check a revocation against")
        try:
            signing.verify_statement(signing.revoke_statement(name, version), self._block(auth), self._keys)
        except SignatureError as exc:
            raise Refused(ErrorCode.BAD_SIGNATURE, f"revocation refused: {exc}") from exc
        self._revoked[(name, version)] = None
        while len(self._revoked) > MAX_REVOCATIONS:
            self._revoked.popitem(last=False)

    def check_not_revoked(self, name: str, version: int) -> None:
        if (name, version) in self._revoked:
            raise Refused(ErrorCode.REVOKED, f"{name} v{version} was revoked")

    def check_image(self, raw: bytes, block: bytes | None) -> str | None:
        """At COMMIT, before the image is loaded: the signer's key id (hex), or None when the store
        is empty (not provisioned); Refused(BAD_SIGNATURE | REVOKED) otherwise."""
        try:
            img = ModelImage.from_bytes(raw)  # the caller has checked the SHA-256
        except ModelError as exc:
            raise Refused(ErrorCode.BAD_IMAGE, str(exc)) from exc
        self.check_not_revoked(img.name, img.version)
        if not self._keys:
            return None
        if block is None:
            raise Refused(ErrorCode.BAD_SIGNATURE, "image not signed (this device has a trust store)")
        try:
            return signing.verify_image(raw, self._block(block), self._keys)
        except SignatureError as exc:
            raise Refused(ErrorCode.BAD_SIGNATURE, str(exc)) from exc
