"""The operator's signing keys: create, list, export the public half, rotate.

Public halves and the key list live in `<data dir>/keys/keys.json` (public keys are not secret).
A private key never lies in plain text where the machine offers better:
* in the OS keyring (`keyring`: Secret Service, macOS Keychain, Windows Credential Locker) when
  one answers;
* else in `<data dir>/keys/<id>.pem`, mode 0600, encrypted with the passphrase in
  `$TINYMLOPS_KEY_PASSPHRASE` (PKCS#8, scrypt-derived key: `cryptography`'s best available);
* only when neither exists (a headless CI box with no passphrase set) unencrypted at mode 0600,
  with a warning in the log and in `keys list`, so the quick start works without a prompt.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.domain import paths
from app.domain.errors import TinyMLOpsError
from app.domain.keyring_access import os_keyring
from app.trust.signing import key_id

log = logging.getLogger(__name__)

# The passphrase that encrypts a key file at rest (an environment variable, never an argument:
# arguments show in `ps` and in shell history).
PASSPHRASE_ENV = "TINYMLOPS_KEY_PASSPHRASE"
KEYRING_SERVICE = "tinymlops-signing-key"
# A private key file is for its owner's eyes only.
KEY_FILE_MODE = 0o600
KEYS_DIR_MODE = 0o700

STORAGE_KEYRING = "keyring"
STORAGE_FILE_ENCRYPTED = "file, encrypted"
STORAGE_FILE_PLAIN = "file, NOT encrypted"
STATUS_ACTIVE = "active"
STATUS_RETIRED = "retired"


class SigningKeyError(TinyMLOpsError):
    """A signing key is missing, locked or unusable."""


@dataclass
class KeyInfo:
    id: str  # hex of the 8-byte key id: the fingerprint shown wherever a signature is shown
    public: str  # hex of the raw 32-byte Ed25519 public key
    created: float
    status: str
    storage: str

    @property
    def public_raw(self) -> bytes:
        return bytes.fromhex(self.public)

    def public_pem(self) -> str:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        key = Ed25519PublicKey.from_public_bytes(self.public_raw)
        return key.public_bytes(serialization.Encoding.PEM,
                                serialization.PublicFormat.SubjectPublicKeyInfo).decode()


class KeyStore:
    def __init__(self, directory: Path | None = None) -> None:
        self.dir = Path(directory) if directory else paths.data_dir() / "keys"

    # ----- the list of keys (public data) -----
    @property
    def _index(self) -> Path:
        return self.dir / "keys.json"

    def list(self) -> list[KeyInfo]:
        if not self._index.exists():
            return []
        try:
            rows = json.loads(self._index.read_text())
            return [KeyInfo(**row) for row in rows]
        except (ValueError, TypeError) as exc:
            raise SigningKeyError(f"{self._index} is damaged: {exc}") from exc

    def _save(self, keys: list[KeyInfo]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(self.dir, KEYS_DIR_MODE)
        tmp = self._index.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(k) for k in keys], indent=1))
        os.replace(tmp, self._index)

    def active(self) -> KeyInfo | None:
        return next((k for k in self.list() if k.status == STATUS_ACTIVE), None)

    def get(self, ident: str) -> KeyInfo:
        matches = [k for k in self.list() if k.id.startswith(ident.lower())]
        if len(matches) != 1:
            raise SigningKeyError(f"no single key matches {ident!r}" if not matches else f"{ident!r} is ambiguous")
        return matches[0]

    def public_keys(self) -> list[bytes]:
        """Raw public keys of every key this operator made, the active one first (a device's store)."""
        keys = sorted(self.list(), key=lambda k: k.status != STATUS_ACTIVE)
        return [k.public_raw for k in keys]

    def trusted(self) -> dict[bytes, bytes]:
        """Key id -> raw public key of every key this operator made (retired keys still verify)."""
        return {bytes.fromhex(k.id): k.public_raw for k in self.list()}

    # ----- creating and rotating -----
    def init(self) -> KeyInfo:
        """Create the first key; an existing active key is an error (use rotate)."""
        if self.active() is not None:
            raise SigningKeyError(f"a signing key exists already ({self.active().id}); use `tinymlops keys rotate`")
        return self._create(self.list())

    def ensure(self) -> KeyInfo:
        """The active key, created on first need (so the quick start signs without a prompt)."""
        return self.active() or self._create(self.list())

    def rotate(self) -> tuple[KeyInfo | None, KeyInfo]:
        keys = self.list()
        old = next((k for k in keys if k.status == STATUS_ACTIVE), None)
        if old is not None:
            old.status = STATUS_RETIRED
        return old, self._create(keys)

    def _create(self, keys: list[KeyInfo]) -> KeyInfo:
        private = Ed25519PrivateKey.generate()
        public_raw = private.public_key().public_bytes_raw()
        info = KeyInfo(key_id(public_raw).hex(), public_raw.hex(), time.time(), STATUS_ACTIVE, "")
        info.storage = self._store_private(info.id, private)
        self._save([*keys, info])
        log.info("new signing key %s (%s)", info.id, info.storage)
        return info

    # ----- private halves -----
    def _key_file(self, ident: str) -> Path:
        return self.dir / f"{ident}.pem"

    def _store_private(self, ident: str, private: Ed25519PrivateKey) -> str:
        kr = os_keyring()
        if kr is not None:
            pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
            try:
                kr.set_password(KEYRING_SERVICE, ident, pem)
                return STORAGE_KEYRING
            except Exception as exc:  # locked or broken keyring: fall back to a file
                log.warning("OS keyring refused the signing key (%s); keeping it in a file", exc)
        passphrase = os.environ.get(PASSPHRASE_ENV, "")
        if passphrase:
            encryption = serialization.BestAvailableEncryption(passphrase.encode())
            storage = STORAGE_FILE_ENCRYPTED
        else:
            encryption = serialization.NoEncryption()
            storage = STORAGE_FILE_PLAIN
            log.warning("no OS keyring and no $%s: signing key %s kept unencrypted (mode 0600) in %s",
                        PASSPHRASE_ENV, ident, self.dir)
        pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self._key_file(ident)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, KEY_FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        os.chmod(path, KEY_FILE_MODE)
        return storage

    def private_key(self, info: KeyInfo | None = None) -> Ed25519PrivateKey:
        info = info or self.ensure()
        if info.storage == STORAGE_KEYRING:
            kr = os_keyring()
            pem = kr.get_password(KEYRING_SERVICE, info.id) if kr is not None else None
            if pem is None:
                raise SigningKeyError(f"signing key {info.id} is not in this machine's keyring")
            data, password = pem.encode(), None
        else:
            path = self._key_file(info.id)
            if not path.exists():
                raise SigningKeyError(f"signing key file {path} is missing")
            data = path.read_bytes()
            password = None
            if info.storage == STORAGE_FILE_ENCRYPTED:
                passphrase = os.environ.get(PASSPHRASE_ENV, "")
                if not passphrase:
                    raise SigningKeyError(f"signing key {info.id} is encrypted: set ${PASSPHRASE_ENV}")
                password = passphrase.encode()
        try:
            key = serialization.load_pem_private_key(data, password=password)
        except (ValueError, TypeError) as exc:
            raise SigningKeyError(f"signing key {info.id} cannot be opened (wrong passphrase?)") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"signing key {info.id} is not an Ed25519 key")
        return key


def load_public_keys(path: Path) -> list[bytes]:
    """Raw Ed25519 public keys from a PEM file (`tinymlops keys export-public`); one or more keys."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    text = Path(path).read_text()
    keys = []
    for block in text.split("-----END PUBLIC KEY-----"):
        if "-----BEGIN PUBLIC KEY-----" not in block:
            continue
        pem = (block.strip() + "\n-----END PUBLIC KEY-----\n").encode()
        try:
            key = serialization.load_pem_public_key(pem)
        except ValueError as exc:
            raise SigningKeyError(f"{path}: not a PEM public key ({exc})") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise SigningKeyError(f"{path}: not an Ed25519 public key")
        keys.append(key.public_bytes_raw())
    if not keys:
        raise SigningKeyError(f"{path} holds no PEM public key")
    return keys
