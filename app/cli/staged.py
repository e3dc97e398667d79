"""Staged rollouts on the command line (app.deploy.staged):

    tinymlops deploy pump-1@3 --device A --device B ... --stages 1,10%,100% --observe 5m --max-alarm-rate 0.01
    tinymlops rollouts [--json]            # every staged rollout: state, where it is or stopped
    tinymlops rollouts --resume ID         # take over one whose process died, and finish it

Exit codes of a staged deploy or a resume: 0 every stage confirmed, 1 a stage was rolled back (the
rollout stopped; earlier stages stay confirmed), 2 it could not start (bad arguments, no broker).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

EXIT_STOPPED = 1


def duration_arg(text: str) -> float:
    """argparse type of every --observe: app.domain.durations' forms (300, 90s, 5m, 1h), seconds."""
    from app.domain.durations import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_options(p: argparse.ArgumentParser) -> None:
    """The staged-rollout options of `deploy` (the defaults live in app.deploy.staged)."""
    p.add_argument("--stages", metavar="LIST",
                   help="staged rollout with observation: cumulative stages, a count or a percentage, e.g. "
                   "1,10%%,100%%; each stage goes on trial, is observed, then confirmed or rolled back (MQTT)")
    p.add_argument("--observe", type=duration_arg, metavar="DURATION",
                   help="with --stages: how long each stage's live telemetry is observed: 300, 90s, 5m, 1h "
                   "(default 300 s)")
    p.add_argument("--max-alarm-rate", type=float, metavar="R",
                   help="with --stages: a stage is rolled back when a device's alarm rate is above this, "
                   "by the low end of its 95%% Wilson interval (default 0.01)")


def register(sub) -> None:
    p = sub.add_parser("rollouts", help="staged rollouts: where each is or stopped; resume an interrupted one")
    p.add_argument("--resume", type=int, metavar="ID", help="finish rollout ID whose process was closed or killed")
    p.add_argument("--broker", help="broker URL for --resume (default: the one the rollout used)")
    p.add_argument("--observe", type=duration_arg, metavar="DURATION",
                   help="with --resume: observe the remaining stages this long instead (300, 90s, 5m, 1h)")
    fit = p.add_mutually_exclusive_group()
    fit.add_argument("--force", action="store_true",
                     help="with --resume: deploy even to devices the fit check predicts will false-alarm")
    fit.add_argument("--skip-fit-check", action="store_true", help="with --resume: no fit-to-machine check")
    p.add_argument("--limit", type=int, default=20, help="how many to list (newest first, default 20)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_rollouts)


def _printer():
    from app.cli.model import ProgressPrinter

    printer = ProgressPrinter()

    def progress(p) -> None:
        printer(f"{p.phase} {p.stage + 1}/{p.stages}", p.fraction, p.message)
    return printer, progress


def cmd_staged(args: argparse.Namespace, fit_gate) -> int:
    """`deploy ... --stages`: called by app.cli.deploy.cmd_deploy."""
    from app.deploy import staged
    from app.domain.errors import DataError

    if args.via != "mqtt":
        raise DataError("--stages needs --via mqtt (each stage is observed through the broker)")
    if args.canary or args.trial or args.trial_timeout:
        raise DataError("--stages replaces --canary, --trial and --trial-timeout (every stage goes on trial)")
    printer, progress = _printer()
    chosen = {k: v for k, v in (("observe_s", args.observe), ("max_alarm_rate", args.max_alarm_rate))
              if v is not None}
    report = staged.staged_deploy(args.model, args.device, args.stages, broker=args.broker, fit_gate=fit_gate,
                                  concurrency=args.concurrency, progress=progress, cancel=threading.Event(), **chosen)
    printer.done()
    return _show(report, args.json)


def cmd_rollouts(args: argparse.Namespace) -> int:
    from app.deploy import staged
    from app.deploy.staged_store import StagedStore

    if args.resume is not None:
        from app.deploy.fit_check import FitGate

        printer, progress = _printer()
        cancel = threading.Event()
        gate = None if args.skip_fit_check else FitGate(force=args.force, cancel=cancel)
        report = staged.resume(args.resume, broker=args.broker, observe_s=args.observe, fit_gate=gate,
                               progress=progress, cancel=cancel)
        printer.done()
        return _show(report, args.json)
    records = StagedStore().list(limit=args.limit)
    if args.json:
        print(json.dumps([r.to_dict() for r in records], indent=2, default=float))
        return 0
    if not records:
        print("no staged rollouts recorded")
    for r in records:
        state = "interrupted" if r.interrupted else r.state
        print(f"{r.id:>4}  {time.strftime('%Y-%m-%d %H:%M', time.localtime(r.started))}  "
              f"{r.model_name}@{r.model_version}  {len(r.devices)} devices  {state}: {r.where}"
              + (f"  (`tinymlops rollouts --resume {r.id}`)" if r.interrupted else ""))
    return 0


def _show(report, as_json: bool) -> int:
    from app.deploy.staged_store import COMPLETED

    if as_json:
        print(json.dumps(report.to_dict(), indent=2, default=float))
    else:
        for s in report.stages:
            pooled = s.evidence.get("pooled")
            alarms = f"{pooled['count']}/{pooled['n']} alarms" if pooled else ""
            print(f"stage {s.index + 1} {s.spec:>5}  {len(s.devices):>4} devices  {s.state:<12} {alarms}  {s.reason}")
        print(f"rollout {report.id}: {report.state}: {report.reason}")
    if report.state != COMPLETED:
        print(f"rollout {report.id} {report.state} at {report.where}: {report.reason}", file=sys.stderr)
    return 0 if report.state == COMPLETED else EXIT_STOPPED
