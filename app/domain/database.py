"""The data directory's one SQLite file (paths.database_path()): how every component opens it
and creates its tables, so the registry, the datasets and the deployment history share one set
of rules (WAL, busy timeout, one writer at a time per connection, rows by column name).

Each component owns its tables and passes their `CREATE ... IF NOT EXISTS` script to
`ensure_schema`; a column added later gets its ALTER there too, in the component's script.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Self

# Another process (the GUI, a CI job) may hold the write lock this long before we give up.
DB_BUSY_TIMEOUT_S = 10.0


class LockedConnection(sqlite3.Connection):
    """A connection with a lock its writers hold around each transaction."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lock = threading.RLock()


def connect(db_path: Path) -> LockedConnection:
    """Open (creating its folder) the database; autocommit, WAL, rows as sqlite3.Row."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    # shared across threads (a GUI creates it, a worker trains and stores): SQLite is built
    # serialized, and writers take the owner's lock around each transaction
    conn = sqlite3.connect(str(db_path), timeout=DB_BUSY_TIMEOUT_S, isolation_level=None,
                           check_same_thread=False, factory=LockedConnection)
    conn.row_factory = sqlite3.Row
    with contextlib.suppress(sqlite3.OperationalError):  # another process may be switching it
        conn.execute("PRAGMA journal_mode=WAL")
    return conn


def ensure_schema(conn: LockedConnection, script: str) -> None:
    """Create a component's tables and indexes when absent (idempotent, one transaction)."""
    with conn.lock:
        conn.executescript(script)


def add_missing_columns(conn: LockedConnection, table: str, columns: dict[str, str]) -> None:
    """A table written before a column existed gets it (NULL in the old rows): `columns` maps every
    column the component now has to its SQL type."""
    with conn.lock:
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for name, sql_type in columns.items():
            if name not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {sql_type}")


@contextlib.contextmanager
def transaction(conn: LockedConnection) -> Iterator[LockedConnection]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception (nothing half-written); one
    thread at a time per connection."""
    with conn.lock:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


class Store:
    """A component that keeps one connection to the database open while it lives (the registry,
    the datasets, the machine descriptions): opened with the component's schema, closed by
    `close()` or at the end of a `with` block."""

    def __init__(self, db_path: Path | None, schema: str) -> None:
        from app.domain import paths

        self.db_path = Path(db_path) if db_path else paths.database_path()
        self._conn = connect(self.db_path)
        ensure_schema(self._conn, schema)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
