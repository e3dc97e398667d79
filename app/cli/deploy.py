"""`tinymlops deploy | rollback | confirm | deployments`: the deployment API on the command line."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

from app.cli import staged
from app.cli.cancellable import run_cancellable
from app.deploy.rollout import DEFAULT_CONCURRENCY
from app.deploy.transfer import DEFAULT_BENCH_COUNT
from app.protocol.framing import DEFAULT_BAUD
from app.transport.local_broker import BROKER_HELP

# Redraw a progress bar at most this often: a 4 KB chunk ACK can come every few milliseconds.
PROGRESS_REDRAW_S = 0.1
# Width of the bar in characters.
BAR_WIDTH = 30
# Exit codes of `deploy`: 0 every device ok, 1 the deployment ran and a device failed (a broker
# outage during a rollout included), 2 it could not start (as for any command error, cli/main.py).
EXIT_DEVICE_FAILED = 1
EXIT_NOT_RUN = 2


def register(sub) -> None:
    p = sub.add_parser("deploy", help="deploy a model version to devices over serial or MQTT",
                       description="Deploy NAME@VERSION (or NAME@latest, or a .tmlm file) to devices; "
                       "records deployment, loading and inference latency in the history.")
    p.add_argument("model", help="NAME@VERSION, NAME@latest or path to a .tmlm image")
    _link_args(p, many=True)
    p.add_argument("--trial", action="store_true", help="activate on trial: reverts unless confirmed")
    p.add_argument("--trial-timeout", type=int, default=0, metavar="S",
                   help="seconds before an unconfirmed trial reverts (0: device default, 300 s)")
    p.add_argument("--bench", type=int, default=DEFAULT_BENCH_COUNT, metavar="N",
                   help=f"inferences the device times (default {DEFAULT_BENCH_COUNT})")
    p.add_argument("--canary", type=int, default=0, metavar="N", help="MQTT: deploy to the first N devices first")
    p.add_argument("--canary-threshold", type=float, default=1.0, metavar="F",
                   help="continue past the canary group only if this fraction succeeded (default 1.0)")
    p.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, metavar="N",
                   help=f"MQTT: devices fetching at once (default {DEFAULT_CONCURRENCY})")
    p.add_argument("--json", action="store_true", help="print a JSON report instead of a table")
    fit = p.add_mutually_exclusive_group()
    fit.add_argument("--force", action="store_true",
                     help="deploy even to devices the fit-to-machine check predicts will false-alarm")
    fit.add_argument("--skip-fit-check", action="store_true",
                     help="no fit-to-machine check (a pipeline that ran `model check --device` already)")
    staged.add_options(p)
    p.set_defaults(func=cmd_deploy)
    staged.register(sub)

    p = sub.add_parser("rollback", help="make each device's previous model active again")
    _link_args(p, many=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("confirm", help="make the model on trial permanent")
    _link_args(p, many=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_confirm)

    p = sub.add_parser("deployments", help="deployment history (newest first)")
    p.add_argument("--device", help="only this device")
    p.add_argument("--limit", type=int, default=None)
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--csv", action="store_true")
    p.set_defaults(func=cmd_history)


def _link_args(p: argparse.ArgumentParser, many: bool) -> None:
    p.add_argument("--device", action="append", default=[], metavar="ID",
                   help="device id (repeat for several)" if many else "device id")
    p.add_argument("--via", choices=("mqtt", "serial"), default="mqtt")
    p.add_argument("--broker", help=BROKER_HELP)
    p.add_argument("--port", help="serial: /dev/ttyUSB0, COM3, a pty path or socket://host:port")
    p.add_argument("--baud", type=int, default=DEFAULT_BAUD, help=f"serial line rate (default {DEFAULT_BAUD})")


class _Bars:
    """One carriage-return progress line per device on a terminal; silent otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.state: dict[str, tuple[int, int]] = {}
        self.lock = threading.Lock()
        self.last = 0.0

    def __call__(self, device: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        with self.lock:
            self.state[device] = (done, total)
            now = time.monotonic()
            if now - self.last < PROGRESS_REDRAW_S and done < total:
                return
            self.last = now
            parts = []
            for dev, (d, t) in self.state.items():
                frac = d / t if t else 0.0
                fill = int(frac * BAR_WIDTH) if len(self.state) == 1 else int(frac * 10)
                width = BAR_WIDTH if len(self.state) == 1 else 10
                parts.append(f"{dev} [{'#' * fill}{'.' * (width - fill)}] {frac:4.0%}")
            sys.stderr.write("\r" + "  ".join(parts)[:200])
            sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled and self.state:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _fmt(value, scale: float = 1.0, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value * scale:.{digits}f}{unit}"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def cmd_deploy(args: argparse.Namespace) -> int:
    from app.deploy import api

    bars = _Bars(enabled=sys.stderr.isatty() and not args.json)
    cancel = threading.Event()
    gate = None if args.skip_fit_check else _fit_gate(args, cancel)
    if args.stages is not None:
        return staged.cmd_staged(args, gate)
    if args.observe is not None or args.max_alarm_rate is not None:
        from app.domain.errors import DataError

        raise DataError("--observe and --max-alarm-rate go with --stages")

    def work(cancel: threading.Event) -> list:
        return api.deploy(
            args.model, args.device, via=args.via, broker=args.broker, port=args.port, baud=args.baud,
            trial=args.trial, trial_timeout_s=args.trial_timeout, bench_count=args.bench, canary=args.canary,
            canary_threshold=args.canary_threshold, concurrency=args.concurrency, progress=bars, cancel=cancel,
            fit_gate=gate)

    try:
        results = run_cancellable(work, "deploy", cancel)
    except Exception as exc:
        if args.json and getattr(exc, "results", None):
            # the command could not start (broker or port unreachable): still the JSON a script parses,
            # and exit code 2 as for every error that stops a command (1: it ran, a device failed)
            print(json.dumps([r.to_dict() for r in exc.results], indent=2))
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_NOT_RUN
        raise
    finally:
        bars.finish()
    if gate is not None and gate.reports:
        from app.deploy.fit_check import format_table

        print("fit to machine (before deploying):\n" + format_table(gate.reports), file=sys.stderr)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        rows = [[r.device, r.outcome, f"{r.model_name}@{r.model_version}", r.transport, r.image_size, r.wire_bytes,
                 _fmt(r.host_deploy_s, 1.0, " s", 2), _fmt(r.device_deploy_us, 1e-3, " ms"),
                 _fmt(r.load_us, 1e-3, " ms", 2),
                 "-" if r.inference_median_us is None else
                 f"{r.inference_min_us}/{r.inference_median_us}/{r.inference_p95_us}/{r.inference_max_us}"
                 + (" (emulated)" if r.emulated else ""),
                 r.error_message or ""] for r in results]
        print(_table(rows, ["device", "outcome", "model", "via", "image B", "wire B", "deploy (host)",
                            "deploy (dev)", "load", "infer us min/med/p95/max", "error"]))
        pulled = [r for r in results if r.rollout_chunk_bytes is not None]
        if pulled:
            r = pulled[0]
            print(f"uplink: published {r.rollout_published_bytes} B for {len(pulled)} device(s) "
                  f"({r.rollout_chunk_bytes} B of model chunks, once per site; {r.image_size} B image)",
                  file=sys.stderr)
        for r in results:
            for note in r.notes:
                print(f"{r.device}: {note}", file=sys.stderr)
        on_trial = [r.device for r in results if r.ok and r.trial]
        if on_trial:
            broker = f" --broker {args.broker}" if args.broker else ""
            where = (f"--via serial --port {args.port}" if args.via == "serial"
                     else " ".join(f"--device {d}" for d in on_trial) + broker)
            after = f"{args.trial_timeout} s" if args.trial_timeout else "the device's trial timeout (300 s)"
            print(f"on trial: `tinymlops confirm {where}` keeps it; without that it reverts after {after}",
                  file=sys.stderr)
    return 0 if all(r.ok for r in results) else EXIT_DEVICE_FAILED


def _fit_gate(args: argparse.Namespace, cancel: threading.Event):
    """The fit-to-machine step `deploy` runs by default (app.deploy.fit_check.FitGate)."""
    from app.deploy.fit_check import FitGate

    def progress(device: str, text: str) -> None:
        print(f"fit check {device}: {text}", file=sys.stderr)

    return FitGate(force=args.force, progress=progress, cancel=cancel)


def _switch(args: argparse.Namespace, fn) -> int:
    devices = args.device or [None]
    if args.via == "mqtt" and not args.device:
        from app.domain.errors import LinkError

        raise LinkError("name the --device")
    from app.deploy.api import SwitchResult
    from app.domain.errors import TinyMLOpsError

    if len(devices) == 1:  # one device: its error is the command's error (exit code 2)
        results = [fn(devices[0], via=args.via, broker=args.broker, port=args.port, baud=args.baud)]
    else:  # several: an unreachable one must not hide what happened to the others
        results = []
        for d in devices:
            try:
                results.append(fn(d, via=args.via, broker=args.broker, port=args.port, baud=args.baud))
            except TinyMLOpsError as exc:
                results.append(SwitchResult(d, False, error_code=exc.code or None, error_message=str(exc)))
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        rows = [[r.device, "ok" if r.ok else "failed", f"{r.model_name}@{r.model_version}" if r.model_name else "-",
                 "yes" if r.trial else "no", r.prev_version or "-", r.error_message or ""] for r in results]
        print(_table(rows, ["device", "result", "active model", "trial", "previous", "error"]))
    return 0 if all(r.ok for r in results) else 1


def cmd_rollback(args: argparse.Namespace) -> int:
    from app.deploy import api

    return _switch(args, api.rollback)


def cmd_confirm(args: argparse.Namespace) -> int:
    from app.deploy import api

    return _switch(args, api.confirm)


def cmd_history(args: argparse.Namespace) -> int:
    from app.deploy import api, history

    records = api.history(device=args.device, limit=args.limit)
    if args.json:
        print(history.to_json(records))
    elif args.csv:
        sys.stdout.write(history.to_csv(records))
    else:
        rows = [[r.id, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started)), r.device,
                 f"{r.model_name}@{r.model_version}", r.transport, r.outcome, r.image_size or "-",
                 _fmt(r.host_deploy_s, 1.0, " s", 2), _fmt(r.load_us, 1e-3, " ms", 2),
                 _fmt(r.inference_median_us, 1.0, " us", 0), r.error_message or ""] for r in records]
        print(_table(rows, ["id", "started", "device", "model", "via", "outcome", "image B", "deploy", "load",
                            "infer med", "error"]) if rows else "no deployments recorded")
    return 0
