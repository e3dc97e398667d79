"""Staged rollouts' state in the data directory's SQLite file (app.domain.database's rules).

Why persisted: a staged rollout runs for minutes to hours (each stage is observed), and the
operator's application may be closed or killed meanwhile. Every transition of a stage (deploying,
observing, confirming, rolling back, its decision and evidence) is committed before the action it
announces, so a restarted application knows exactly where a rollout stopped and can resume it
(app.deploy.staged.resume) without leaving a stage half-confirmed.

Tables: `staged_rollouts` (one row a rollout: model, targets, options, state, owner pid) and
`staged_stages` (one row a stage: its devices, state, evidence, reason).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from app.domain import database, paths

# Rollout states: RUNNING (a process owns it, or owned it and died: see `interrupted`), COMPLETED
# (every stage confirmed), STOPPED (a stage was rolled back or failed), CANCELLED.
RUNNING, COMPLETED, STOPPED, CANCELLED = "running", "completed", "stopped", "cancelled"
# Stage states, in the order a stage goes through them.
PENDING, DEPLOYING, OBSERVING, CONFIRMING, ROLLING_BACK = "pending", "deploying", "observing", "confirming", \
    "rolling-back"
CONFIRMED, ROLLED_BACK, SKIPPED = "confirmed", "rolled-back", "skipped"
# A stage in one of these was interrupted mid-way when its rollout's process died.
UNFINISHED_STAGE = (DEPLOYING, OBSERVING, CONFIRMING, ROLLING_BACK)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS staged_rollouts (
  id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL NOT NULL, updated REAL NOT NULL, model TEXT NOT NULL,
  model_name TEXT NOT NULL, model_version INTEGER NOT NULL, devices TEXT NOT NULL, stages TEXT NOT NULL,
  observe_s REAL NOT NULL, max_alarm_rate REAL NOT NULL, broker TEXT, state TEXT NOT NULL,
  reason TEXT NOT NULL DEFAULT '', owner_pid INTEGER);
CREATE TABLE IF NOT EXISTS staged_stages (
  rollout INTEGER NOT NULL, idx INTEGER NOT NULL, spec TEXT NOT NULL, devices TEXT NOT NULL, state TEXT NOT NULL,
  started REAL, decided REAL, evidence TEXT NOT NULL DEFAULT '{}', reason TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (rollout, idx));
"""


@dataclass
class StageRecord:
    """One stage: the devices it adds, its state and the evidence of its decision."""

    index: int
    spec: str  # as given: "1", "10%", "100%"
    devices: list[str]
    state: str = PENDING
    started: float | None = None
    decided: float | None = None
    evidence: dict = field(default_factory=dict)
    reason: str = ""


@dataclass
class RolloutRecord:
    """One staged rollout and its stages."""

    id: int
    started: float
    updated: float
    model: str  # what was asked: NAME@VERSION or a .tmlm path
    model_name: str
    model_version: int
    devices: list[str]
    observe_s: float
    max_alarm_rate: float
    broker: str | None
    state: str
    reason: str
    owner_pid: int | None
    stages: list[StageRecord] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        """Still RUNNING but its process is gone: the app was closed or killed mid-rollout."""
        return self.state == RUNNING and not _alive(self.owner_pid)

    @property
    def where(self) -> str:
        """Where it is or stopped, in words."""
        current = next((s for s in self.stages if s.state not in (CONFIRMED, SKIPPED)), None)
        if current is None:
            return "all stages confirmed"
        return f"stage {current.index + 1}/{len(self.stages)} ({current.spec}, {len(current.devices)} devices) " \
               f"{current.state}"

    def to_dict(self) -> dict:
        out = asdict(self)
        out["interrupted"] = self.interrupted
        out["where"] = self.where
        return out


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class StagedStore:
    """The two tables; opens the database per call (a store may be used from any thread)."""

    def __init__(self, db_path: str | Path | None = None) -> None:
        self.db_path = Path(db_path) if db_path is not None else paths.database_path()
        with contextlib.closing(database.connect(self.db_path)) as db:
            database.ensure_schema(db, _SCHEMA)

    def create(self, model: str, model_name: str, model_version: int, devices: list[str],
               stages: list[tuple[str, list[str]]], observe_s: float, max_alarm_rate: float,
               broker: str | None) -> RolloutRecord:
        now = time.time()
        with contextlib.closing(database.connect(self.db_path)) as db, database.transaction(db):
            cur = db.execute(
                "INSERT INTO staged_rollouts (started, updated, model, model_name, model_version, devices, stages, "
                "observe_s, max_alarm_rate, broker, state, owner_pid) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (now, now, model, model_name, model_version, json.dumps(devices),
                 json.dumps([spec for spec, _ in stages]), observe_s, max_alarm_rate, broker, RUNNING, os.getpid()))
            rid = int(cur.lastrowid)
            db.executemany("INSERT INTO staged_stages (rollout, idx, spec, devices, state) VALUES (?,?,?,?,?)",
                           [(rid, i, spec, json.dumps(ds), PENDING if ds else SKIPPED)
                            for i, (spec, ds) in enumerate(stages)])
        return self.get(rid)

    def get(self, rollout_id: int) -> RolloutRecord:
        with contextlib.closing(database.connect(self.db_path)) as db:
            row = db.execute("SELECT * FROM staged_rollouts WHERE id = ?", (int(rollout_id),)).fetchone()
            if row is None:
                from app.domain.errors import DataError

                raise DataError(f"no staged rollout {rollout_id} (`tinymlops rollouts` lists them)")
            stages = db.execute("SELECT * FROM staged_stages WHERE rollout = ? ORDER BY idx", (int(rollout_id),))
            stage_list = [StageRecord(s["idx"], s["spec"], json.loads(s["devices"]), s["state"], s["started"],
                                      s["decided"], json.loads(s["evidence"]), s["reason"]) for s in stages]
        return RolloutRecord(row["id"], row["started"], row["updated"], row["model"], row["model_name"],
                             row["model_version"], json.loads(row["devices"]), row["observe_s"],
                             row["max_alarm_rate"], row["broker"], row["state"], row["reason"], row["owner_pid"],
                             stage_list)

    def list(self, limit: int | None = None) -> list[RolloutRecord]:
        """Newest first."""
        sql = "SELECT id FROM staged_rollouts ORDER BY id DESC" + (" LIMIT ?" if limit else "")
        with contextlib.closing(database.connect(self.db_path)) as db:
            ids = [r[0] for r in db.execute(sql, (int(limit),) if limit else ())]
        return [self.get(i) for i in ids]

    def claim(self, rollout_id: int) -> bool:
        """Take over an interrupted rollout for this process: False when its owner still runs it or
        it is finished (two processes must never drive one rollout)."""
        rec = self.get(rollout_id)
        if rec.state != RUNNING or (rec.owner_pid != os.getpid() and _alive(rec.owner_pid)):
            return False
        with contextlib.closing(database.connect(self.db_path)) as db, database.transaction(db):
            cur = db.execute("UPDATE staged_rollouts SET owner_pid = ?, updated = ? WHERE id = ? AND state = ? AND "
                             "owner_pid IS ?", (os.getpid(), time.time(), int(rollout_id), RUNNING, rec.owner_pid))
            return cur.rowcount == 1

    def set_stage(self, rollout_id: int, index: int, state: str, *, evidence: dict | None = None,
                  reason: str | None = None) -> None:
        now = time.time()
        sets, args = ["state = ?"], [state]
        if state == DEPLOYING:
            sets.append("started = ?")
            args.append(now)
        if state in (CONFIRMED, ROLLED_BACK):
            sets.append("decided = ?")
            args.append(now)
        if evidence is not None:
            sets.append("evidence = ?")
            args.append(json.dumps(evidence, default=float))
        if reason is not None:
            sets.append("reason = ?")
            args.append(reason)
        with contextlib.closing(database.connect(self.db_path)) as db, database.transaction(db):
            db.execute(f"UPDATE staged_stages SET {', '.join(sets)} WHERE rollout = ? AND idx = ?",
                       (*args, int(rollout_id), int(index)))
            db.execute("UPDATE staged_rollouts SET updated = ? WHERE id = ?", (now, int(rollout_id)))

    def set_observe(self, rollout_id: int, observe_s: float) -> None:
        """A resumed rollout's remaining stages are observed this long instead."""
        with contextlib.closing(database.connect(self.db_path)) as db, database.transaction(db):
            db.execute("UPDATE staged_rollouts SET observe_s = ?, updated = ? WHERE id = ?",
                       (float(observe_s), time.time(), int(rollout_id)))

    def finish(self, rollout_id: int, state: str, reason: str) -> None:
        with contextlib.closing(database.connect(self.db_path)) as db, database.transaction(db):
            db.execute("UPDATE staged_rollouts SET state = ?, reason = ?, updated = ? WHERE id = ?",
                       (state, reason, time.time(), int(rollout_id)))
