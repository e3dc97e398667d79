"""`tinymlops` command line: every operation the GUI offers, for people and CI/CD jobs.

Each command group lives in its own module with a `register(subparsers)` function; heavy imports
(TensorFlow, Qt) happen inside the command that needs them, so `--help` and `fleet list` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from app import __version__

# Command-group modules under app.cli, in the order --help lists them.
COMMAND_MODULES = ("gui", "sim", "fleet", "data", "machine", "report", "model", "deploy", "adapt", "drift", "keys",
                   "firmware", "broker", "smoke")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinymlops",
        description="Tiny-MLOps operator: train, convert, deploy and monitor anomaly detectors on "
        "microcontroller vibration sensors. Without a command, opens the GUI on the embedded default "
        "(in-process MQTT broker and a virtual fleet).",
    )
    parser.add_argument("--version", action="version", version=f"tinymlops {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"app.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"app.cli.{name}":
                raise
            continue
        module.register(sub)
    from app.cli.broker_identity import add_identity_options

    add_identity_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command is None:
        gui = importlib.import_module("app.cli.gui")
        return int(gui.run_default(args) or 0)
    from app.domain.errors import TinyMLOpsError

    try:
        from app.cli.broker_identity import fold_identity

        fold_identity(args)
        return int(args.func(args) or 0)
    except TinyMLOpsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
