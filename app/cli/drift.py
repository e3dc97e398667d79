"""`tinymlops drift [--device ID] [--json]`: every device's drift state from the telemetry history,
with its evidence (windows judged, alarms, the alarm rate's Wilson 95 % interval). Exit 1 when a
device drifts, so a CI job can start `tinymlops adapt` for it; 0 otherwise."""

from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    p = sub.add_parser("drift", help="drift state of every device from the telemetry history (exit 1 on drift)",
                       description="Judge each device's last hour of stored telemetry against the model it runs "
                       "now: drift when the low end of the alarm rate's 95 %% interval is above the rate a "
                       "fitted model stays under. Exit 1 when a device drifts.")
    p.add_argument("--device", metavar="ID", help="only this device")
    p.add_argument("--json", action="store_true", help="print the states as JSON")
    p.set_defaults(func=cmd_drift)


def cmd_drift(args: argparse.Namespace) -> int:
    from app.analysis import drift

    states = drift.fleet_drift(device=args.device)
    if args.json:
        print(json.dumps([s.to_dict() for s in states], indent=2))
    elif not states:
        print("no devices in the telemetry history")
    else:
        for s in states:
            low, high = s.alarms.interval
            print(f"{s.device:<12} {s.state:<7} v{s.model_version} windows {s.alarms.total:>5} "
                  f"alarms {s.alarms.count:>4} (95 % CI {100 * low:.1f}-{100 * high:.1f} %)  {s.message}")
    return 1 if any(s.state == drift.DRIFT for s in states) else 0
