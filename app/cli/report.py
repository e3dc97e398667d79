"""`tinymlops report`: the maintenance-round report of a site (every machine's ISO zone, alarms
with their diagnosis and spectra) from the datasets recorded in the period."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.transport.local_broker import BROKER_HELP

DEFAULT_SINCE = "7d"


def register(sub) -> None:
    p = sub.add_parser("report", help="maintenance-round report: every machine's zone, alarms with diagnosis",
                       description="Analyse the latest recording of every device (on --site) recorded in the "
                       "period, with its machine description, and write an HTML (or PDF) report.")
    p.add_argument("--site", help="the site: first part of the devices' location (e.g. plant-a)")
    p.add_argument("--since", default=DEFAULT_SINCE, help=f"period: 30m, 12h, 7d, 2w (default {DEFAULT_SINCE})")
    p.add_argument("--out", type=Path, metavar="FILE", help="FILE.html or FILE.pdf (default: a summary on stdout)")
    p.add_argument("--live", type=float, metavar="SECONDS",
                   help="also stream this many seconds from every online device of the site now and analyse it "
                   "(the recorded datasets give the trend)")
    p.add_argument("--broker", help=BROKER_HELP)
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from app.analysis import report

    since = report.parse_since(args.since)
    entries = report.collect(args.site, since)
    if args.live is not None:
        from app.analysis.live_round import record_site

        print(f"streaming {args.live:g} s from every online device of {args.site or 'every site'}...",
              file=sys.stderr)
        live = report.analyse_live(record_site(args.broker, args.site, args.live))
        entries = report.merge(entries, live)
    if not entries:
        print(f"no recordings of {args.site or 'any site'} in the last {args.since} "
              "(`tinymlops data record --device ID ...` records one)", file=sys.stderr)
    for e in entries:
        a = e.analysis
        status = (f"{a.velocity_overall_mm_s:6.2f} mm/s  zone {a.zone.zone}  {a.fault}" if a
                  else f"not analysed: {e.problem}")
        print(f"{'ALARM ' if e.alarm else '      '}{e.device_id:<10} {e.location:<30} {status}")
    if args.out:
        report.write(entries, args.site, args.since, args.out)
        print(f"report written to {args.out}", file=sys.stderr)
    return 0
