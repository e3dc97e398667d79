"""Machine descriptions: what each device is mounted on, kept in the application's SQLite file.

A vibration sensor alone cannot tell a bearing line from a gear line: the analysis needs the
machine's nominal shaft speed, its bearing geometry and its ISO class (group and foundation). The
maintenance engineer describes each machine once, by the id of the device mounted on it; the CLI
(`tinymlops machine set/show/list`) and the GUI edit the same rows.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from app.analysis import iso
from app.analysis.bearings import Bearing, bearing_from_dict
from app.domain import database
from app.domain.errors import DataError

# The machines file's format: its "format" key says what the file is, "version" what this one reads.
EXPORT_FORMAT = "tinymlops-machines"
EXPORT_VERSION = 1
# A machines file larger than this is not one (a plant's fleet is thousands of lines of JSON, not MB).
MAX_IMPORT_BYTES = 16 * 1024 * 1024
# Fields of a machine in the file, besides device_id: what `update` takes.
_EDITABLE = ("name", "shaft_hz", "bearing", "iso_group", "foundation", "notes")

# Shaft speeds outside this range are a unit mistake (rpm typed as Hz, or Hz as rpm): 0.5-500 Hz
# is 30-30,000 rpm, every rotary machine a vibration sensor of this class watches.
SHAFT_HZ_RANGE = (0.5, 500.0)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS machines (
    device_id TEXT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    shaft_hz REAL,
    bearing TEXT NOT NULL DEFAULT '',
    iso_group INTEGER,
    foundation TEXT,
    notes TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Machine:
    """The machine a device is mounted on. `iso_group` None means a small machine (ISO 10816-1
    class I); otherwise ISO 20816-3 group 1 or 2 with a rigid or flexible foundation."""

    device_id: str
    name: str = ""
    shaft_hz: float | None = None  # nominal; the analysis estimates the real speed near it
    bearing: Bearing | None = None
    iso_group: int | None = None
    foundation: str | None = None
    notes: str = ""
    updated: float = 0.0

    def __post_init__(self) -> None:
        if not self.device_id.strip():
            raise DataError("a machine needs the id of the device mounted on it")
        if self.shaft_hz is not None:
            lo, hi = SHAFT_HZ_RANGE
            if not (math.isfinite(self.shaft_hz) and lo <= self.shaft_hz <= hi):
                raise DataError(f"shaft speed {self.shaft_hz} Hz is outside {lo:g}-{hi:g} Hz "
                                f"({lo * 60:g}-{hi * 60:g} rpm): is it in rpm? (Hz = rpm / 60)")
        iso.machine_class(self.iso_group, self.foundation)  # raises DataError when inconsistent

    @property
    def machine_class(self) -> str:
        return iso.machine_class(self.iso_group, self.foundation)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["bearing"] = self.bearing.to_dict() if self.bearing else None
        out["machine_class"] = self.machine_class
        return out


class MachineStore(database.Store):
    def __init__(self, db_path: Path | None = None) -> None:
        super().__init__(db_path, _SCHEMA)

    @staticmethod
    def _row(row) -> Machine:
        bearing = bearing_from_dict(json.loads(row["bearing"])) if row["bearing"] else None
        return Machine(device_id=row["device_id"], name=row["name"], shaft_hz=row["shaft_hz"], bearing=bearing,
                       iso_group=row["iso_group"], foundation=row["foundation"], notes=row["notes"],
                       updated=row["updated"])

    def find(self, device_id: str) -> Machine | None:
        row = self._conn.execute("SELECT * FROM machines WHERE device_id=?", (device_id,)).fetchone()
        return self._row(row) if row else None

    def get(self, device_id: str) -> Machine:
        machine = self.find(device_id)
        if machine is None:
            raise DataError(f"no machine described for device {device_id!r} (`tinymlops machine set "
                            f"{device_id} --shaft-hz F --bearing 6205 --iso-group 2 --foundation rigid`)")
        return machine

    def list(self) -> list[Machine]:
        return [self._row(r) for r in self._conn.execute("SELECT * FROM machines ORDER BY device_id")]

    def update(self, device_id: str, **changes) -> Machine:
        """Create or change a machine: only the fields given change (validated before anything is
        written). `foundation` may be omitted for a small machine (no `iso_group`)."""
        unknown = set(changes) - {"name", "shaft_hz", "bearing", "iso_group", "foundation", "notes"}
        if unknown:
            raise DataError(f"unknown machine field(s): {', '.join(sorted(unknown))}")
        with database.transaction(self._conn):
            current = self.find(device_id) or Machine(device_id)
            machine = replace(current, **changes, updated=time.time())
            self._write(machine)
        return machine

    def _write(self, m: Machine) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO machines (device_id, name, shaft_hz, bearing, iso_group, foundation, "
            "notes, updated) VALUES (?,?,?,?,?,?,?,?)",
            (m.device_id, m.name, m.shaft_hz, json.dumps(m.bearing.to_dict()) if m.bearing else "",
             m.iso_group, m.foundation, m.notes, m.updated))

    def replace_all(self, machines: list[Machine]) -> None:
        """Write every machine of `machines` (replacing a described device's row) in one
        transaction: a failure leaves the store as it was."""
        with database.transaction(self._conn):
            for m in machines:
                self._write(m)

    def remove(self, device_id: str) -> bool:
        with database.transaction(self._conn):
            cur = self._conn.execute("DELETE FROM machines WHERE device_id=?", (device_id,))
        return cur.rowcount > 0


def machine_classes(db_path: Path | None = None) -> dict[str, str]:
    """device id -> ISO machine class of every described machine (the fleet table's zones)."""
    with MachineStore(db_path) as machines:
        return {m.device_id: m.machine_class for m in machines.list()}


def export_machines(store: MachineStore) -> dict:
    """Every machine description as a JSON-able document (`tinymlops machine export`), to move a
    fleet's machines to another operator laptop with the fleet."""
    return {"format": EXPORT_FORMAT, "version": EXPORT_VERSION,
            "machines": [{"device_id": m.device_id, **{k: _field(m, k) for k in _EDITABLE}, "updated": m.updated}
                         for m in store.list()]}


def _field(machine: Machine, key: str):
    value = getattr(machine, key)
    return value.to_dict() if key == "bearing" and value is not None else value


def parse_export(document: object) -> list[Machine]:
    """The machines of an exported document, every one validated; a DataError naming the first
    bad entry (by index and device) otherwise, before anything is written."""
    if not isinstance(document, dict) or document.get("format") != EXPORT_FORMAT:
        raise DataError(f"not a machines file (its \"format\" must be {EXPORT_FORMAT!r}: "
                        "`tinymlops machine export FILE` writes one)")
    if document.get("version") != EXPORT_VERSION:
        raise DataError(f"machines file version {document.get('version')!r}: this version reads {EXPORT_VERSION}")
    entries = document.get("machines")
    if not isinstance(entries, list):
        raise DataError("machines file has no \"machines\" list")
    machines: list[Machine] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"machine #{i + 1}"
        try:
            if not isinstance(entry, dict) or not isinstance(entry.get("device_id"), str):
                raise DataError("needs a \"device_id\" string")
            where += f" ({entry['device_id']})"
            unknown = set(entry) - {"device_id", "updated", *_EDITABLE}
            if unknown:
                raise DataError(f"unknown field(s) {', '.join(sorted(unknown))}")
            if entry["device_id"] in seen:
                raise DataError("described twice")
            bearing = entry.get("bearing")
            if bearing is not None and not isinstance(bearing, dict):
                raise DataError("\"bearing\" must be an object {n_balls, ball_diameter_mm, ...}")
            fields = {k: entry[k] for k in _EDITABLE if k in entry and k != "bearing"}
            if not all(isinstance(fields.get(k, ""), str) for k in ("name", "notes")):
                raise DataError("\"name\" and \"notes\" must be text")
            machine = Machine(device_id=entry["device_id"], bearing=bearing_from_dict(bearing),
                              updated=float(entry.get("updated") or time.time()), **fields)
        except (DataError, TypeError, ValueError) as exc:
            raise DataError(f"{where}: {exc}") from None
        seen.add(machine.device_id)
        machines.append(machine)
    return machines


def import_machines(store: MachineStore, path: Path) -> list[Machine]:
    """Read a machines file and write its machines (replacing those of the same devices, keeping
    the others): all or nothing. A DataError that says what is wrong with the file otherwise."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_IMPORT_BYTES:
            raise DataError(f"{path} is larger than {MAX_IMPORT_BYTES // (1024 * 1024)} MB: not a machines file")
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not JSON: {exc}") from None
    machines = parse_export(document)
    store.replace_all(machines)
    return machines
