"""`tinymlops fleet list|events|ports`: what a broker knows about the fleet, what happens to it (alarms
with the features that drove them), and which serial ports exist."""

from __future__ import annotations

import argparse
import json
import threading
import time
from typing import TYPE_CHECKING

from app.domain.errors import LinkError
from app.transport.local_broker import BROKER_HELP

if TYPE_CHECKING:
    from app.transport.broker_probe import BrokerCapabilities

# Extra listening after the broker's retained statuses came (`--wait`): none by default; 1.5 s would
# also catch a telemetry message (about 1 Hz) from each device, for the SCORE column.
DEFAULT_WAIT_S = 0.0
# On a broker that does not send retained statuses to wildcard subscriptions (RabbitMQ), a device the
# fleet memory does not know names itself by its telemetry (about 1 Hz, PROTOCOL.md 2.2): listen one
# period with a margin, then look it up on its exact status topic.
TELEMETRY_PERIOD_S = 1.2
# `fleet events` watches this long by default: a few telemetry periods of every device.
EVENTS_WAIT_S = 30.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("fleet", help="list the devices a broker knows, or the serial ports")
    sub = parser.add_subparsers(dest="fleet_command", metavar="SUBCOMMAND", required=True)

    lst = sub.add_parser("list", help="devices seen on a broker: id, status, profile, firmware, model, score")
    lst.add_argument("--broker", metavar="URL", help=BROKER_HELP)
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    lst.add_argument("--wait", type=float, default=DEFAULT_WAIT_S, metavar="SECONDS",
                     help="listen this much longer after the broker sent what it holds, e.g. 1.5 for every "
                          "device's latest score (on a broker without retained delivery to wildcards: listen "
                          f"this long, at least {TELEMETRY_PERIOD_S:g} s, for devices to name themselves) "
                          f"(default {DEFAULT_WAIT_S:g})")
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
    # the memory gives an offline device its last known model and last-seen time (its will has neither),
    # and tells where to look for devices a broker will not announce to wildcard subscriptions
    with broker_connection(args.broker) as conn, FleetMonitor(conn, memory=FleetMemory(default_path())) as monitor:
        started = time.monotonic()
        caps, how = _settle(conn, monitor, args.wait)
        waited = time.monotonic() - started
        records = monitor.devices()
        counters = dict(monitor.counters)
    now = time.time()
    if args.json:
        out = [r.as_dict(with_hello=False) for r in records]
        # one line, no indent: json's C encoder (an indented dump of 10,000 devices took 0.6 s)
        print(json.dumps({"broker": conn.url.address, "broker_capabilities": caps.as_dict(),
                          "waited_s": round(waited, 3), "waited_for": how, "devices": out, "counters": counters}))
        return 0
    if not caps.retained_wildcard:
        print(caps.describe())
    if not records:
        print(f"no devices on {conn.url.address} (listened {waited:.2f} s: {how})")
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


def _settle(conn, monitor, extra_s: float) -> tuple[BrokerCapabilities, str]:
    """Wait until the broker has sent every status it holds for us (no fixed wait), probing the broker
    meanwhile, and listen `extra_s` more; returns its capabilities and what was waited for, in words."""
    from app.transport.broker_probe import BrokerCapabilities, capabilities_of

    probed: dict[str, BrokerCapabilities] = {}
    # a site of the remembered fleet: an operator confined by an ACL may publish the probe there
    sites = sorted({r["site"] for r in monitor.memory.known().values() if r.get("site")}) if monitor.memory else []
    prober = threading.Thread(target=lambda: probed.setdefault(
        "caps", capabilities_of(conn, site=sites[0] if sites else None)), daemon=True, name="broker-probe")
    prober.start()
    monitor.settle()
    prober.join()
    caps = probed.get("caps") or BrokerCapabilities(conn.url.address, problems=("the probe failed: see the log",))
    asked = f", then {extra_s:g} s as asked" if extra_s else ""
    if caps.retained_wildcard:
        if extra_s:
            time.sleep(extra_s)  # the operator asked to listen longer (scores): a wait is what they want
        return caps, "the broker's retained statuses (marker: a later subscription's acknowledgement)" + asked
    # devices unknown to the fleet memory name themselves by telemetry; each is then watched on its exact
    # status topic and asked GET_INFO on its exact topics, and a second marker says those statuses came
    listen = max(TELEMETRY_PERIOD_S, extra_s)
    time.sleep(listen)  # one telemetry period (or what was asked): no event says "every device has spoken"
    monitor.settle()
    if monitor.lookups is not None:  # the devices asked GET_INFO on their exact topics have answered
        monitor.lookups.wait_answered()
    return caps, (f"the statuses on exact topics (markers: later subscriptions' acknowledgements), {listen:g} s "
                  "of telemetry and the GET_INFO answers of devices it named: this broker does not send "
                  "retained statuses to wildcards")


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
