"""Shared file storage for the registry and the datasets: content-addressed files written
atomically (temp file + rename), so a crash or an error never leaves a half-written artifact
under its final name. (Their SQLite file is opened through app.domain.database.)"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

# Stored files are readable like any other user file (mkstemp would leave them 0600).
FILE_MODE = 0o644


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temp file in the same directory and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class ContentStore:
    """Files named by the SHA-256 of their content. `put` reports whether it created the file, so
    a failed transaction can remove exactly what it added."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> Path:
        return self.root / digest

    def put(self, data: bytes) -> tuple[str, bool]:
        digest = sha256_hex(data)
        target = self.path(digest)
        if target.exists() and target.stat().st_size == len(data):
            return digest, False
        write_atomic(target, data)
        return digest, True

    def get(self, digest: str) -> bytes:
        data = self.path(digest).read_bytes()
        if sha256_hex(data) != digest:
            raise OSError(f"artifact {digest[:12]} is corrupted on disk (SHA-256 differs)")
        return data

    def remove(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(digest).unlink()
