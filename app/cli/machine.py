"""`tinymlops machine set|show|list|remove|export|import`: the machine each device is mounted on (shaft speed,
bearing, ISO class), which the vibration analysis (`data analyze`, `report`, the live view) uses."""

from __future__ import annotations

import argparse
import json
import time

# --iso-group not given (None means "none": a small machine).
_UNSET = object()


def iso_group_arg(text: str) -> int | None:
    """1, 2, or "none" (a small machine: ISO 10816-1 class I)."""
    if text.lower() in ("none", "i", "small"):
        return None
    if text not in ("1", "2"):
        raise argparse.ArgumentTypeError("ISO group is 1 (300 kW-50 MW), 2 (15-300 kW) or none (< 15 kW)")
    return int(text)


def bearing_help() -> str:
    from app.analysis.bearings import CATALOGUE

    return (f"a catalogue bearing ({', '.join(CATALOGUE)}) or a geometry n=BALLS,d=BALL_MM,D=PITCH_MM,angle=DEG "
            "(e.g. n=9,d=7.94,D=39.04,angle=0)")


def register(sub) -> None:
    machine = sub.add_parser("machine", help="describe the machine each device is mounted on",
                             description="Machine descriptions (by the id of the device mounted on the machine): "
                             "nominal shaft speed, bearing geometry, ISO 20816-3 group and foundation.")
    msub = machine.add_subparsers(dest="machine_command", metavar="ACTION", required=True)

    p = msub.add_parser("set", help="create or change a machine description (only the options given change)")
    p.add_argument("device", metavar="DEVICE")
    p.add_argument("--name", help="what the machine is, e.g. 'cooling pump P-101'")
    p.add_argument("--shaft-hz", type=float, metavar="F", help="nominal shaft speed, Hz (rpm / 60)")
    p.add_argument("--rpm", type=float, help="nominal shaft speed in rpm (instead of --shaft-hz)")
    p.add_argument("--bearing", metavar="SPEC", help=bearing_help())
    p.add_argument("--iso-group", type=iso_group_arg, default=_UNSET, metavar="{1,2,none}",
                   help="ISO 20816-3 group: 1 (300 kW-50 MW), 2 (15-300 kW); none: small machine, ISO 10816-1 class I")
    p.add_argument("--foundation", choices=("rigid", "flexible"))
    p.add_argument("--notes")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_set)

    p = msub.add_parser("show", help="one machine's description and its defect frequencies")
    p.add_argument("device", metavar="DEVICE")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

    p = msub.add_parser("list", help="every described machine")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = msub.add_parser("remove", help="forget a machine description")
    p.add_argument("device", metavar="DEVICE")
    p.set_defaults(func=cmd_remove)

    p = msub.add_parser("bearings", help="the bearing catalogue")
    p.set_defaults(func=cmd_bearings)

    p = msub.add_parser("export", help="write every machine description to a JSON file (to move them with the fleet)")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_export)

    p = msub.add_parser("import", help="read machine descriptions from an exported JSON file: all or none; "
                        "machines of the same devices are replaced, the others kept")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_import)


def _changes(args: argparse.Namespace) -> dict:
    from app.analysis.bearings import parse_bearing
    from app.domain.errors import DataError

    changes: dict = {}
    if args.shaft_hz is not None and args.rpm is not None:
        raise DataError("give the shaft speed once: --shaft-hz or --rpm")
    if args.rpm is not None:
        changes["shaft_hz"] = args.rpm / 60.0
    elif args.shaft_hz is not None:
        changes["shaft_hz"] = args.shaft_hz
    if args.bearing is not None:
        changes["bearing"] = parse_bearing(args.bearing)
    if args.iso_group is not _UNSET:
        changes["iso_group"] = args.iso_group
        if args.iso_group is None:
            changes["foundation"] = None
    if args.foundation is not None:
        changes["foundation"] = args.foundation
    for key in ("name", "notes"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    return changes


def describe(machine) -> str:
    from app.analysis import iso

    bounds = iso.ZONE_BOUNDARIES[machine.machine_class]
    lines = [f"machine     {machine.device_id}" + (f"  ({machine.name})" if machine.name else ""),
             "shaft       " + (f"{machine.shaft_hz:g} Hz nominal ({machine.shaft_hz * 60:.0f} rpm)"
                               if machine.shaft_hz else "not given"),
             "bearing     " + (machine.bearing.describe() if machine.bearing else "not given"),
             f"ISO class   {machine.machine_class}  (zones A/B, B/C, C/D at {bounds[0]:g} / {bounds[1]:g} / "
             f"{bounds[2]:g} mm/s)"]
    if machine.bearing and machine.shaft_hz:
        freqs = machine.bearing.frequencies(machine.shaft_hz)
        lines.append("defects     " + ", ".join(f"{k} {v:.2f} Hz" for k, v in freqs.items()))
    if machine.notes:
        lines.append(f"notes       {machine.notes}")
    if machine.updated:
        lines.append(f"updated     {time.strftime('%Y-%m-%d %H:%M', time.localtime(machine.updated))}")
    return "\n".join(lines)


def cmd_set(args: argparse.Namespace) -> int:
    from app.analysis.machines import MachineStore
    from app.domain.errors import DataError

    changes = _changes(args)
    if not changes:
        raise DataError("nothing to set: give --shaft-hz/--rpm, --bearing, --iso-group, --foundation, --name "
                        "or --notes")
    with MachineStore() as store:
        machine = store.update(args.device, **changes)
    print(json.dumps(machine.to_dict(), indent=2) if args.json else describe(machine))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from app.analysis.machines import MachineStore

    with MachineStore() as store:
        machine = store.get(args.device)
    print(json.dumps(machine.to_dict(), indent=2) if args.json else describe(machine))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from app.analysis.machines import MachineStore

    with MachineStore() as store:
        machines = store.list()
    if args.json:
        print(json.dumps([m.to_dict() for m in machines], indent=2))
        return 0
    if not machines:
        print("no machines described yet: `tinymlops machine set DEVICE --shaft-hz F --bearing 6205 ...`")
        return 0
    print(f"{'device':<12} {'shaft Hz':>8} {'bearing':<28} {'ISO class':<20} name")
    for m in machines:
        shaft = f"{m.shaft_hz:.2f}" if m.shaft_hz else "-"
        bearing = (m.bearing.name or m.bearing.describe()) if m.bearing else "-"
        print(f"{m.device_id:<12} {shaft:>8} {bearing[:28]:<28} {m.machine_class:<20} {m.name}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from app.analysis.machines import MachineStore
    from app.domain.errors import DataError

    with MachineStore() as store:
        if not store.remove(args.device):
            raise DataError(f"no machine described for device {args.device!r}")
    print(f"removed machine {args.device}")
    return 0


def cmd_bearings(args: argparse.Namespace) -> int:
    from app.analysis.bearings import CATALOGUE

    print(f"{'bearing':<8} {'n':>3} {'d mm':>6} {'D mm':>6}  BPFO   BPFI   BSF    FTF  (orders of shaft speed)")
    for name, b in CATALOGUE.items():
        o = b.orders()
        print(f"{name:<8} {b.n_balls:>3} {b.ball_diameter_mm:>6.2f} {b.pitch_diameter_mm:>6.2f}  "
              f"{o['BPFO']:.3f}  {o['BPFI']:.3f}  {o['BSF']:.3f}  {o['FTF']:.3f}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from app.analysis.machines import MachineStore, export_machines
    from app.domain.errors import DataError

    with MachineStore() as store:
        document = export_machines(store)
    try:
        Path(args.file).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot write {args.file}: {exc.strerror or exc}") from None
    print(f"exported {len(document['machines'])} machine(s) to {args.file}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from app.analysis.machines import MachineStore, import_machines

    with MachineStore() as store:
        machines = import_machines(store, args.file)
    print(f"imported {len(machines)} machine(s) from {args.file}: {', '.join(m.device_id for m in machines) or '-'}")
    return 0
