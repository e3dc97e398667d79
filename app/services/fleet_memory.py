"""What the operator last knew of each device, kept across runs in a small JSON file.

A device's last will is composed when it connects, so the retained OFFLINE status a fresh
`tinymlops fleet list` (or a GUI started later) finds carries neither the model it ran when it went
silent nor when it was last heard. Every FleetMonitor given a memory remembers those values as it
sees them and saves them now and then; an offline device the monitor never saw online is shown
with what the memory holds. Several processes may share the file: a save merges per device,
the most recently heard entry wins, and the file is replaced atomically.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# File name under the data directory.
MEMORY_FILE = "fleet_memory.json"
# A plant has hundreds of devices, not millions: a file larger than this is not ours; it is ignored.
MAX_MEMORY_BYTES = 4 * 1024 * 1024
# Devices remembered at most (the most recently heard are kept): bounds the file and the load.
MAX_REMEMBERED = 5000
# The values a device's last will does not carry reliably, with their types; nothing else is kept.
FIELDS: dict[str, type] = {"site": str, "location": str, "profile": str, "firmware": str, "model_name": str,
                           "model_version": int, "trial": bool, "prev_version": int, "last_seen": float}


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    """Only the known fields, only of their type (a hand-edited or damaged file cannot inject others)."""
    out: dict[str, Any] = {}
    for key, kind in FIELDS.items():
        value = values.get(key)
        if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = float(value)
        elif isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
            out[key] = value
    return out


def default_path() -> Path:
    """The memory file of this installation (the data directory)."""
    from app.domain.paths import data_dir

    return data_dir() / MEMORY_FILE


class FleetMemory:
    """Last known values per device id; thread-safe. Errors reading or writing are logged, never raised:
    a lost memory only makes `fleet list` show less, it must not stop it."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = self._read()
        self._dirty = False

    def get(self, device_id: str) -> dict[str, Any] | None:
        with self._lock:
            entry = self._entries.get(device_id)
            return dict(entry) if entry else None

    def known(self) -> dict[str, dict[str, Any]]:
        """Every remembered device and its values: where to look for a device the broker will not
        announce by itself (RabbitMQ sends retained statuses to exact topics only)."""
        with self._lock:
            return {device_id: dict(entry) for device_id, entry in self._entries.items()}

    def remember(self, device_id: str, values: dict[str, Any]) -> None:
        entry = _clean(values)
        with self._lock:
            if self._entries.get(device_id) != entry:
                self._entries[device_id] = entry
                self._dirty = True

    def forget(self, device_id: str) -> None:
        with self._lock:
            if self._entries.pop(device_id, None) is not None:
                self._dirty = True

    def save(self) -> None:
        """Merge with what other processes saved and replace the file; a no-op when nothing changed."""
        with self._lock:
            if not self._dirty:
                return
            merged = self._read()
            for device_id, entry in self._entries.items():
                if float(entry.get("last_seen") or 0) >= float(merged.get(device_id, {}).get("last_seen") or 0):
                    merged[device_id] = entry
            newest = sorted(merged.items(), key=lambda kv: float(kv[1].get("last_seen") or 0), reverse=True)
            self._entries = dict(newest[:MAX_REMEMBERED])
            self._dirty = False
            text = json.dumps({"version": 1, "devices": self._entries}, indent=1, sort_keys=True)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".fleet_memory.", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    out.write(text)
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            log.warning("could not save the fleet memory to %s: %s", self.path, exc)

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            if self.path.stat().st_size > MAX_MEMORY_BYTES:
                log.warning("ignoring %s: larger than %d bytes", self.path, MAX_MEMORY_BYTES)
                return {}
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring the fleet memory %s: %s", self.path, exc)
            return {}
        devices = data.get("devices") if isinstance(data, dict) else None
        if not isinstance(devices, dict):
            return {}
        return {str(k): _clean(v) for k, v in devices.items() if isinstance(v, dict)}
