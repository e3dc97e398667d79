"""`tinymlops adapt --device ID`: record (or read history), train, check, deploy on trial, observe,
confirm or roll back, in one step (app.deploy.adapt). Exit 0 confirmed, 1 refused or rolled back,
2 failed (a step's error; the device is on its previous model or reverts at its trial timeout)."""

from __future__ import annotations

import argparse
import json
import sys

from app.cli.staged import duration_arg


def register(sub) -> None:
    # the defaults live in app.deploy.adapt (not imported here: numpy and the deploy API load only
    # when the command runs, so `--help` stays fast)
    p = sub.add_parser("adapt", help="adapt a model to one machine: record, train, check, trial, observe, confirm",
                       description="One-step adapt: fresh normal data of the machine (recorded now, or its "
                       "telemetry history), train and convert a version, check its fit on the machine, deploy it "
                       "on trial (signed), observe the live scores, then confirm when the alarm rate stays under "
                       "--max-alarm-rate, else roll back. One report with every step.")
    p.add_argument("--device", required=True, metavar="ID", help="the machine's device id")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--seconds", type=float, metavar="S",
                        help="record this much of its stream now (default 120)")
    source.add_argument("--hours", type=float, metavar="H",
                        help="train on its telemetry history's feature vectors of the last H hours instead")
    p.add_argument("--name", metavar="FAMILY", help="model family (default adapt-<device>)")
    p.add_argument("--observe", type=duration_arg, metavar="DURATION",
                   help="how long to observe the live telemetry on trial: 60, 90s, 5m, 1h (default 60 s)")
    p.add_argument("--max-alarm-rate", type=float, metavar="R",
                   help="confirm when alarms / observed windows is at most this (default 0.01)")
    p.add_argument("--epochs", type=int, help="maximum training epochs (early stopping usually ends sooner)")
    p.add_argument("--broker", help="broker URL (default: the running app's embedded broker)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_adapt)


def cmd_adapt(args: argparse.Namespace) -> int:
    import threading

    from app.cli.model import ProgressPrinter
    from app.deploy.adapt import CONFIRMED, FAILED, adapt
    from app.ml import training

    printer = ProgressPrinter()
    config = training.TrainConfig(**({"epochs": args.epochs} if args.epochs is not None else {}))
    chosen = {k: v for k, v in (("observe_s", args.observe), ("max_alarm_rate", args.max_alarm_rate))
              if v is not None}
    report = adapt(args.device, seconds=args.seconds, hours=args.hours, name=args.name, broker=args.broker,
                   config=config, **chosen,
                   progress=lambda p: printer(p.step, p.fraction, p.message), cancel=threading.Event())
    printer.done()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=float))
    else:
        for step in report.steps:
            print(f"{step.name:<9} {step.seconds:8.1f} s  {'ok' if step.ok else 'FAILED: ' + str(step.error)}")
        print(f"{report.device}: {report.decision} {report.model or ''}: {report.reason}")
    if report.decision == FAILED:
        print(f"error: {report.reason}", file=sys.stderr)
        return 2
    return 0 if report.decision == CONFIRMED else 1


def train_per_device(args: argparse.Namespace, config) -> int:
    """`model train --per-device --device A --device B [--seconds S] [--deploy [--trial]]`: exit 0
    when every machine got its version (and deployment), else 1."""
    from app.cli.model import ProgressPrinter
    from app.deploy.adapt import DEFAULT_RECORD_S
    from app.deploy.per_device import train_per_device as run
    from app.domain.errors import DataError

    if not args.per_device or not args.device:
        raise DataError("--per-device needs at least one --device ID (and --device needs --per-device)")
    if args.data:
        raise DataError("--per-device records its own data: drop --data")
    if args.trial and not args.deploy:
        raise DataError("--trial goes with --deploy")
    printer = ProgressPrinter()
    results = run(args.device, args.name, seconds=args.seconds or DEFAULT_RECORD_S, broker=args.broker,
                  deploy=args.deploy, trial=args.trial, config=config,
                  progress=lambda p: printer(p.step, p.fraction, p.message))
    printer.done()
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        for r in results:
            print(f"{r.device}: {r.model or '-'}" + (f" deployed {r.deploy_outcome}" if r.deploy_outcome else "")
                  + (f" error: {r.error}" if r.error else ""))
    return 0 if all(r.ok for r in results) else 1
