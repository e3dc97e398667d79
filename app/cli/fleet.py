"""`tinymlops fleet list|events|ports`: what a broker knows about the fleet, what happens to it (alarms
with the features that drove them), and which serial ports exist."""

from __future__ import annotations

import argparse
import json
import time

from app.domain.errors import LinkError
from app.transport.local_broker import BROKER_HELP

# Retained statuses arrive at once; 3 s also catches a telemetry message (about 1 Hz) from each device.
DEFAULT_WAIT_S = 3.0
# `fleet events` watches this long by default: a few telemetry periods of every device.
EVENTS_WAIT_S = 30.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("fleet", help="list the devices a broker knows, or the serial ports")
    sub = parser.add_subparsers(dest="fleet_command", metavar="SUBCOMMAND", required=True)

    lst = sub.add_parser("list", help="devices seen on a broker: id, status, profile, firmware, model, score")
    lst.add_argument("--broker", metavar="URL", help=BROKER_HELP)
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    lst.add_argument("--wait", type=float, default=DEFAULT_WAIT_S, metavar="SECONDS",
                     help=f"how long to listen before printing (default {DEFAULT_WAIT_S:g})")
    lst.set_defaults(func=cmd_list)

    ev = sub.add_parser("events", help="watch a broker and print what happens: devices appearing and going offline, "
                        "alarms with the features that drove the score, model changes")
    ev.add_argument("--broker", metavar="URL", help=BROKER_HELP)
    ev.add_argument("--json", action="store_true", help="one JSON object per line")
    ev.add_argument("--wait", type=float, default=EVENTS_WAIT_S, metavar="SECONDS",
                    help=f"how long to watch (default {EVENTS_WAIT_S:g}; 0: until interrupted)")
    ev.add_argument("--until-alarm", action="store_true", help="stop after the first alarm")
    ev.set_defaults(func=cmd_events)

    ports = sub.add_parser("ports", help="serial ports on this machine")
    ports.add_argument("--json", action="store_true", help="machine-readable output")
    ports.set_defaults(func=cmd_ports)


def _ago(ts: float, now: float) -> str:
    if not ts:
        return "-"
    seconds = max(0.0, now - ts)
    return f"{seconds:.0f} s ago" if seconds < 120 else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def cmd_list(args: argparse.Namespace) -> int:
    from app.deploy.links import broker_connection
    from app.services.fleet_memory import FleetMemory, default_path
    from app.services.fleet_monitor import FleetMonitor

    if args.wait < 0:
        raise LinkError("--wait must be zero or more seconds")
    # the memory gives an offline device its last known model and last-seen time (its will has neither)
    with broker_connection(args.broker) as conn, FleetMonitor(conn, memory=FleetMemory(default_path())) as monitor:
        time.sleep(args.wait)
        records = monitor.devices()
        counters = dict(monitor.counters)
    now = time.time()
    if args.json:
        out = []
        for r in records:
            item = r.as_dict()
            item.pop("hello")
            out.append(item)
        print(json.dumps({"broker": conn.url.address, "devices": out, "counters": counters}, indent=2))
        return 0
    if not records:
        print(f"no devices on {conn.url.address} (listened {args.wait:g} s)")
        return 0
    rows = [["ID", "STATUS", "PROFILE", "FIRMWARE", "MODEL", "SCORE", "LAST SEEN"]]
    for r in records:
        model = f"{r.model_name}@{r.model_version}" if r.model_name else "-"
        if r.trial:
            model += " (trial)"
        score = "-" if r.score is None else f"{r.score:.4g}" + (" ALARM" if r.alarm else "")
        rows.append([r.device_id, r.state, r.profile or "-", r.firmware or "-", model, score, _ago(r.last_seen, now)])
    print(_table(rows))
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    """Print the events of app.analysis.fleet_events as they happen; an alarm's line says which
    features drove the score (app.analysis.alarm_cause) when this host has the device's model."""
    import queue

    from app.analysis.alarm_cause import AlarmExplainer
    from app.analysis.fleet_events import transitions
    from app.deploy.links import broker_connection
    from app.services.fleet_monitor import FleetMonitor

    if args.wait < 0:
        raise LinkError("--wait must be zero or more seconds")
    explainer = AlarmExplainer()
    changes: queue.Queue = queue.Queue()
    last: dict[str, object] = {}
    deadline = time.monotonic() + args.wait if args.wait else None
    with broker_connection(args.broker) as conn, FleetMonitor(conn) as monitor:
        monitor.add_listener(lambda event, record: changes.put(record) if event != "removed" else None)
        while deadline is None or (left := deadline - time.monotonic()) > 0:
            try:
                record = changes.get(timeout=None if deadline is None else left)
            except queue.Empty:
                break
            alarmed = False
            for level, device, text in transitions(last.get(record.device_id), record, explainer.text):
                alarmed = alarmed or level == "alarm"
                if args.json:
                    item = {"time": time.time(), "level": level, "device": device, "text": text}
                    if level == "alarm":
                        cause = explainer.explain(record)
                        item["cause"] = cause.to_dict() if cause is not None else None
                    print(json.dumps(item), flush=True)
                else:
                    print(f"{time.strftime('%H:%M:%S')}  {level:<7}  {device:<12}  {text}", flush=True)
            last[record.device_id] = record
            if alarmed and args.until_alarm:
                break
    return 0


def cmd_ports(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from app.transport.discovery import list_serial_ports

    ports = list_serial_ports()
    if args.json:
        print(json.dumps([asdict(p) for p in ports], indent=2))
        return 0
    if not ports:
        print("no serial ports found")
        return 0
    rows = [["PORT", "DESCRIPTION", "HWID"]] + [[p.device, p.description, p.hwid] for p in ports]
    print(_table(rows))
    return 0
