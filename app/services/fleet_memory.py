"""What the operator last knew of each device, kept across runs in the data directory's SQLite file.

A device's last will is composed when it connects, so the retained OFFLINE status a fresh
`tinymlops fleet list` (or a GUI started later) finds carries neither the model it ran when it went
silent nor when it was last heard; and a broker that does not send retained messages to wildcard
subscriptions (RabbitMQ) announces no device at all until it speaks. Every FleetMonitor given a
memory remembers each device's values (its site among them: where to look it up) as it sees them
and saves them now and then; an offline device the monitor never saw online is shown with what the
memory holds. Several processes may share the file: a save writes per device, the most recently
heard entry wins, in one transaction. A `fleet_memory.json` of an earlier version is imported once.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

from app.domain import database

log = logging.getLogger(__name__)

# The earlier JSON file under the data directory, imported (then renamed) when found.
LEGACY_FILE = "fleet_memory.json"
# A plant has hundreds of devices, not millions: a legacy file larger than this is not ours; ignored.
MAX_MEMORY_BYTES = 4 * 1024 * 1024
# Devices remembered at most (the most recently heard are kept): bounds the table and the load.
MAX_REMEMBERED = 5000
# The values a device's last will does not carry reliably, with their types; nothing else is kept.
FIELDS: dict[str, type] = {"site": str, "location": str, "profile": str, "firmware": str, "model_name": str,
                           "model_version": int, "trial": bool, "prev_version": int, "last_seen": float}
_SQL_TYPES = {str: "TEXT", int: "INTEGER", bool: "INTEGER", float: "REAL"}
_SCHEMA = ("CREATE TABLE IF NOT EXISTS fleet_memory (device_id TEXT PRIMARY KEY, "
           + ", ".join(f"{key} {_SQL_TYPES[kind]}" for key, kind in FIELDS.items()) + ");")


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    """Only the known fields, only of their type (a damaged row or file cannot inject others)."""
    out: dict[str, Any] = {}
    for key, kind in FIELDS.items():
        value = values.get(key)
        if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = float(value)
        elif kind is bool and isinstance(value, int) and value in (0, 1):
            out[key] = bool(value)
        elif isinstance(value, kind) and not isinstance(value, bool):
            out[key] = value
    return out


def default_path() -> Path:
    """The database of this installation (the data directory's one SQLite file)."""
    from app.domain.paths import database_path

    return database_path()


class FleetMemory:
    """Last known values per device id; thread-safe. Errors reading or writing are logged, never raised:
    a lost memory only makes `fleet list` show less, it must not stop it."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db: database.LockedConnection | None = self._open()
        self._entries: dict[str, dict[str, Any]] = self._read()
        self._dirty: set[str] = set()
        self._forgotten: set[str] = set()
        self._import_legacy()

    def _open(self) -> database.LockedConnection | None:
        try:
            db = database.connect(self.path)
            database.ensure_schema(db, _SCHEMA)
            return db
        except sqlite3.Error as exc:
            log.warning("the fleet memory in %s is unusable (%s): devices are remembered for this run only",
                        self.path, exc)
            return None

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
                self._dirty.add(device_id)
                self._forgotten.discard(device_id)

    def forget(self, device_id: str) -> None:
        with self._lock:
            if self._entries.pop(device_id, None) is not None:
                self._forgotten.add(device_id)
            self._dirty.discard(device_id)

    def save(self) -> None:
        """Write what changed (the most recently heard entry of a device wins over another process's);
        a no-op when nothing changed."""
        with self._lock:
            dirty = {d: dict(self._entries[d]) for d in self._dirty if d in self._entries}
            forgotten = set(self._forgotten)
            self._dirty.clear()
            self._forgotten.clear()
        if self._db is None or not (dirty or forgotten):
            return
        keys = list(FIELDS)
        upsert = (f"INSERT INTO fleet_memory (device_id, {', '.join(keys)}) VALUES (?{', ?' * len(keys)}) "
                  f"ON CONFLICT(device_id) DO UPDATE SET {', '.join(f'{k} = excluded.{k}' for k in keys)} "
                  "WHERE coalesce(excluded.last_seen, 0) >= coalesce(fleet_memory.last_seen, 0)")
        try:
            with database.transaction(self._db) as db:
                db.executemany(upsert, [(d, *(e.get(k) for k in keys)) for d, e in dirty.items()])
                db.executemany("DELETE FROM fleet_memory WHERE device_id = ?", [(d,) for d in forgotten])
                db.execute("DELETE FROM fleet_memory WHERE device_id NOT IN (SELECT device_id FROM fleet_memory "
                           "ORDER BY coalesce(last_seen, 0) DESC LIMIT ?)", (MAX_REMEMBERED,))
        except sqlite3.Error as exc:
            log.warning("could not save the fleet memory to %s: %s", self.path, exc)

    def _read(self) -> dict[str, dict[str, Any]]:
        if self._db is None:
            return {}
        try:
            with self._db.lock:
                rows = self._db.execute(f"SELECT device_id, {', '.join(FIELDS)} FROM fleet_memory "
                                        "ORDER BY coalesce(last_seen, 0) DESC LIMIT ?", (MAX_REMEMBERED,)).fetchall()
        except sqlite3.Error as exc:
            log.warning("ignoring the fleet memory in %s: %s", self.path, exc)
            return {}
        return {str(row["device_id"]): _clean(dict(row)) for row in rows}

    def _import_legacy(self) -> None:
        """The JSON file an earlier version kept: its devices join the table once, then it is renamed."""
        legacy = self.path.parent / LEGACY_FILE
        if self._db is None or not legacy.is_file():
            return
        devices = None
        try:
            if legacy.stat().st_size > MAX_MEMORY_BYTES:
                log.warning("ignoring %s: larger than %d bytes", legacy, MAX_MEMORY_BYTES)
            else:
                data = json.loads(legacy.read_text(encoding="utf-8"))
                devices = data.get("devices") if isinstance(data, dict) else None
        except (OSError, ValueError) as exc:
            log.warning("ignoring the old fleet memory %s: %s", legacy, exc)
        if isinstance(devices, dict):
            for device_id, values in devices.items():
                if isinstance(values, dict) and str(device_id) not in self._entries:
                    self.remember(str(device_id), values)
            self.save()
        try:
            legacy.replace(legacy.with_suffix(".json.imported"))
        except OSError as exc:
            log.debug("could not rename %s: %s", legacy, exc)
