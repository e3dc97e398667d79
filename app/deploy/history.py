"""Deployment history: one row per device per deployment, in the registry's SQLite file.

The paper's three figures (deployment, loading, inference latency) are first-class data: every
deployment, successful or not, is recorded with what was sent, over which link, and what the
device reported, so runs can be compared and exported (CSV, JSON) for a report.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from app.domain import database, paths


@dataclass
class DeploymentFigures:
    """What one device's deployment sent and measured: the identity of the image, the link, the
    sizes, the paper's three latencies and the outcome. The API's result (deploy.api's
    DeploymentResult) and the history's row (DeploymentRecord) both are these figures plus their own
    fields, so a figure is declared once and a result becomes a row without copying field by field."""

    device: str = ""
    model_name: str = ""
    model_version: int = 0
    model_sha: str = ""  # full SHA-256 hex of the image
    transport: str = ""  # "serial", "mqtt-push", "mqtt-pull"
    image_size: int = 0
    wire_bytes: int = 0
    host_deploy_s: float | None = None  # first byte sent -> COMMIT reply: verified, loaded, active (host clock)
    device_deploy_us: int | None = None  # XFER_BEGIN received -> image verified (device clock)
    load_us: int | None = None
    bench_n: int | None = None
    inference_min_us: int | None = None
    inference_median_us: int | None = None
    inference_p95_us: int | None = None
    inference_max_us: int | None = None
    emulated: bool = False
    trial: bool = False
    # "ok", "failed", "refused", "cancelled", "skipped"; in the history also "rolled-back",
    # "confirmed", "rollback-failed", "confirm-failed"
    outcome: str = ""
    error_code: int | None = None
    error_message: str | None = None
    signed_by: str | None = None  # key id of the image's signature (PROTOCOL.md 6.2), None when unsigned

    def figures(self) -> dict:
        """Only the shared figures, by name (a result's or a record's own fields left out)."""
        return {f.name: getattr(self, f.name) for f in fields(DeploymentFigures)}


@dataclass
class DeploymentRecord(DeploymentFigures):
    """One device's deployment as the history keeps it: the figures, when, and over which link."""

    started: float = 0.0  # time.time() when the deployment began
    baud: int | None = None
    broker: str | None = None
    port: str | None = None
    broker_identity: str | None = None  # who the operator was on the broker: user name or certificate CN
    id: int | None = None


_COLUMNS = [f for f in fields(DeploymentRecord) if f.name != "id"]
_SQL_TYPE = {"float": "REAL", "int": "INTEGER", "str": "TEXT", "bool": "INTEGER",
             "int | None": "INTEGER", "float | None": "REAL", "str | None": "TEXT"}


def _schema() -> str:
    cols = ",\n  ".join(f"{f.name} {_SQL_TYPE[str(f.type)]}" for f in _COLUMNS)
    return (f"CREATE TABLE IF NOT EXISTS deployments (\n  id INTEGER PRIMARY KEY AUTOINCREMENT,\n  {cols}\n);\n"
            "CREATE INDEX IF NOT EXISTS deployments_device ON deployments(device, started);\n")


class DeploymentHistory:
    """The `deployments` table; creates it when absent and touches no other table. Opens the
    database per call (app.domain.database's rules): a history object may live in any thread."""

    def __init__(self, db_path: str | Path | None = None) -> None:
        self.db_path = Path(db_path) if db_path is not None else paths.database_path()
        with contextlib.closing(database.connect(self.db_path)) as db:
            database.ensure_schema(db, _schema())
            database.add_missing_columns(db, "deployments", {f.name: _SQL_TYPE[str(f.type)] for f in _COLUMNS})

    def add(self, record: DeploymentRecord) -> int:
        names = [f.name for f in _COLUMNS]
        values = [getattr(record, n) for n in names]
        with contextlib.closing(database.connect(self.db_path)) as db, database.transaction(db):
            cur = db.execute(f"INSERT INTO deployments ({', '.join(names)}) VALUES "
                             f"({', '.join('?' * len(names))})", values)
            record.id = int(cur.lastrowid)
        return record.id

    def full_sha(self, device: str, prefix: str) -> str:
        """The full SHA-256 hex of an image this history deployed to `device` whose hash starts
        with `prefix` (a HELLO carries only 8 bytes); `prefix` itself when none is known."""
        with contextlib.closing(database.connect(self.db_path)) as db:
            row = db.execute("SELECT model_sha FROM deployments WHERE device = ? AND length(model_sha) = 64 "
                             "AND substr(model_sha, 1, ?) = ? ORDER BY id DESC LIMIT 1",
                             (device, len(prefix), prefix)).fetchone()
        return row[0] if row and prefix else prefix

    def list(self, device: str | None = None, limit: int | None = None) -> list[DeploymentRecord]:
        """Newest first."""
        sql = "SELECT * FROM deployments"
        args: list = []
        if device:
            sql += " WHERE device = ?"
            args.append(device)
        sql += " ORDER BY started DESC, id DESC"
        if limit:
            sql += " LIMIT ?"
            args.append(int(limit))
        with contextlib.closing(database.connect(self.db_path)) as db:
            rows = db.execute(sql, args).fetchall()
        out = []
        for row in rows:
            data = dict(row)
            data["emulated"] = bool(data["emulated"])
            data["trial"] = bool(data["trial"])
            out.append(DeploymentRecord(**data))
        return out


def to_json(records: list[DeploymentRecord]) -> str:
    return json.dumps([asdict(r) for r in records], indent=2)


def to_csv(records: list[DeploymentRecord]) -> str:
    buf = io.StringIO()
    names = ["id", "started"] + [f.name for f in _COLUMNS if f.name != "started"]
    writer = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow({k: ("" if v is None else v) for k, v in asdict(r).items()})
    return buf.getvalue()
