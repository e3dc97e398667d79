"""`tinymlops smoke-test`: prove an installation works, headless, in under a minute.

Starts the embedded default (in-process broker + virtual fleet), waits until the fleet monitor sees
the devices, trains and converts a small model with TensorFlow and loads it in TFLM, then prints one
JSON line with what it saw and the timings. Exit 0 when everything passed, 1 otherwise. Packaging
runs it against the frozen bundle (packaging/smoke_test.py); support staff can run it on a laptop.
"""

from __future__ import annotations

import argparse
import json
import sys

from app.services import smoke


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "smoke-test", help="check this installation end to end (broker, virtual fleet, conversion)",
        description=__doc__.split("\n\n")[1].replace("\n", " "))
    parser.add_argument("--devices", type=int, default=smoke.DEFAULT_DEVICE_COUNT,
                        help=f"virtual devices to start (default {smoke.DEFAULT_DEVICE_COUNT})")
    parser.add_argument("--timeout", type=float, default=smoke.DEVICES_TIMEOUT_S,
                        help=f"seconds to wait for the devices (default {smoke.DEVICES_TIMEOUT_S:.0f})")
    parser.add_argument("--no-convert", action="store_true", help="skip training/converting the small model")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.devices < 1:
        from app.domain.errors import TinyMLOpsError

        raise TinyMLOpsError("--devices must be at least 1")

    def progress(stage: str, fraction: float, message: str) -> None:
        if args.verbose:
            print(f"[{stage} {fraction:4.0%}] {message}", file=sys.stderr)

    result = smoke.run(args.devices, convert=not args.no_convert, timeout=args.timeout, progress=progress)
    print(json.dumps(result.to_dict(), sort_keys=True), flush=True)
    return 0 if result.ok else 1
