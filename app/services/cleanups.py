"""Retained model chunks a pull rollout could not clear, remembered until they are (issue 11.14).

A pull rollout publishes its chunks retained and clears them when it ends (PROTOCOL.md 5.2). When
the broker is unreachable at that moment, the chunks would stay on it (memory on the broker, and
delivered to anything that subscribes) until the same image is rolled out again. So the clean-up
is written to a small JSON file in the data directory and finished when the connection to that
broker is back (same process) or the next time the application opens that broker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path

from app.domain.errors import LinkError
from app.domain.paths import data_dir

log = logging.getLogger(__name__)

# File in the data directory that holds the clean-ups still to do.
PENDING_FILE = "pending_chunk_cleanups.json"
# Clearing publishes one empty retained message per chunk (hundreds); a LAN broker acknowledges
# them within a second, this allows a slow one.
CLEANUP_TIMEOUT_S = 30.0
# A clean-up older than this is dropped unfinished: the broker was replaced or is gone for good.
PENDING_MAX_AGE_S = 30 * 24 * 3600.0


@dataclass(frozen=True)
class Cleanup:
    """The retained chunks `<prefix>/0 .. <prefix>/<n_chunks - 1>` on broker `broker` (host:port)."""

    broker: str
    prefix: str
    n_chunks: int
    since: float = 0.0

    @property
    def key(self) -> tuple[str, str]:
        return self.broker, self.prefix


class PendingCleanups:
    """The JSON file of clean-ups still to do; thread-safe, written atomically."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self._path if self._path is not None else data_dir() / PENDING_FILE

    def _load(self) -> dict[tuple[str, str], Cleanup]:
        try:
            raw = json.loads(self.path.read_text())
            items = [Cleanup(str(e["broker"]), str(e["prefix"]), int(e["n_chunks"]), float(e.get("since", 0)))
                     for e in raw]
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, KeyError) as exc:
            # keep the unreadable file for a person to look at; start a new list
            bad = self.path.with_suffix(".unreadable")
            with contextlib.suppress(OSError):
                os.replace(self.path, bad)
            log.warning("pending chunk clean-ups in %s are unreadable (%s); kept as %s", self.path, exc, bad)
            return {}
        return {c.key: c for c in items}

    def _save(self, items: dict[tuple[str, str], Cleanup]) -> None:
        path = self.path
        if not items:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(c) for c in items.values()], indent=1))
        os.replace(tmp, path)

    def add(self, cleanup: Cleanup) -> None:
        with self._lock:
            items = self._load()
            items[cleanup.key] = cleanup
            self._save(items)

    def remove(self, cleanup: Cleanup) -> None:
        with self._lock:
            items = self._load()
            if items.pop(cleanup.key, None) is not None:
                self._save(items)

    def for_broker(self, broker: str) -> list[Cleanup]:
        with self._lock:
            items = self._load()
            now = time.time()
            stale = [k for k, c in items.items() if now - c.since > PENDING_MAX_AGE_S]
            for k in stale:
                log.warning("giving up clearing retained chunks %s on %s: pending for over %.0f days",
                            items[k].prefix, items[k].broker, PENDING_MAX_AGE_S / 86400)
                del items[k]
            if stale:
                self._save(items)
            return [c for c in items.values() if c.broker == broker]


def broker_key(connection) -> str:
    """How the file names a broker: host:port (never credentials)."""
    return connection.url.address


def clear_chunks(connection, prefix: str, n_chunks: int, timeout: float = CLEANUP_TIMEOUT_S) -> None:
    """Delete retained chunks with empty retained payloads; LinkError unless the broker confirmed them."""
    for index in range(n_chunks):
        connection.publish(f"{prefix}/{index}", b"", qos=1, retain=True)
    connection.wait_published(timeout)


def finish_pending(connection, store: PendingCleanups | None = None) -> int:
    """Clear what earlier rollouts left on this connection's broker; returns how many were finished.
    Never raises: what cannot be cleared now stays in the file for the next time."""
    store = store or PendingCleanups()
    done = 0
    for cleanup in store.for_broker(broker_key(connection)):
        try:
            clear_chunks(connection, cleanup.prefix, cleanup.n_chunks)
        except LinkError as exc:
            log.info("retained chunks under %s still not cleared: %s", cleanup.prefix, exc)
            continue
        store.remove(cleanup)
        done += 1
        log.info("cleared %d retained chunks left under %s by an earlier rollout", cleanup.n_chunks, cleanup.prefix)
    return done


_watched: weakref.WeakSet = weakref.WeakSet()  # connections with finish_on_reconnect registered
_watched_lock = threading.Lock()


def finish_on_reconnect(connection, store: PendingCleanups | None = None) -> None:
    """Finish this broker's pending clean-ups every time `connection` (re)connects, on a worker thread
    (never on paho's network thread, which must deliver the acknowledgements). Registered once per
    connection; the connection drops the callback when it is closed."""
    with _watched_lock:
        if connection in _watched:
            return
        _watched.add(connection)
    running = threading.Lock()

    def work() -> None:
        try:
            finish_pending(connection, store)
        finally:
            running.release()

    def on_state(up: bool, reason: str) -> None:
        if not up or getattr(connection, "_closed", False):
            return
        if running.acquire(blocking=False):  # one pass at a time
            threading.Thread(target=work, name="chunk-cleanup", daemon=True).start()

    connection.on_state(on_state)


def finish_in_background(connection, store: PendingCleanups | None = None) -> None:
    """For a long-lived connection (the GUI's session): finish pending clean-ups now on a worker
    thread, without delaying the start, and again after every reconnect."""
    finish_on_reconnect(connection, store)
    threading.Thread(target=finish_pending, args=(connection, store), name="chunk-cleanup", daemon=True).start()
