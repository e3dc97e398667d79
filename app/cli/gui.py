"""`tinymlops gui [--broker URL] [--devices N]`, and `tinymlops` alone: the operator GUI.

The window is shown before anything heavy happens: the session (embedded broker + virtual fleet +
fleet monitor, or a plant broker) starts in a worker thread, and TensorFlow is imported only by
the jobs that train or convert. Without a display (Linux, no DISPLAY or WAYLAND_DISPLAY) it says
so instead of letting Qt abort. `--smoke-test` shows the window (offscreen when there is no
display), waits for the devices to fill the fleet view, then trains one tiny model through the
GUI's own worker path (a spawned child process, the part most likely to break in a frozen bundle),
prints one JSON line and exits (the packaged build's check).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# Qt's on-screen platforms on Linux need one of these; with none set, Qt aborts the process (SIGABRT
# and a core file) after a paragraph about platform plugins.
DISPLAY_VARIABLES = ("DISPLAY", "WAYLAND_DISPLAY")
NO_DISPLAY_MESSAGE = ("error: no display to open the operator window on (neither DISPLAY nor WAYLAND_DISPLAY "
                      "is set: an SSH session or a server?). Start it in a desktop session, or use the "
                      "command line (tinymlops --help); QT_QPA_PLATFORM=offscreen runs the window unseen.")


def no_display() -> bool:
    """True on Linux when Qt would find no screen: no display variable and no platform chosen."""
    return (sys.platform.startswith("linux") and not os.environ.get("QT_QPA_PLATFORM")
            and not any(os.environ.get(name) for name in DISPLAY_VARIABLES))


def register(sub) -> None:
    from app.services.app_session import DEFAULT_DEVICE_COUNT

    p = sub.add_parser("gui", help="open the operator window (default when no command is given)",
                       description="The operator window. Without --broker it starts the embedded default: an "
                       "in-process MQTT broker and a virtual fleet, so live devices show at once.")
    p.add_argument("--broker", metavar="URL", help="connect to this broker (mqtt://[user:pass@]host:port) instead "
                   "of the embedded default")
    p.add_argument("--devices", type=int, default=DEFAULT_DEVICE_COUNT, metavar="N",
                   help=f"virtual devices of the embedded default (default {DEFAULT_DEVICE_COUNT})")
    p.add_argument("--smoke-test", action="store_true",
                   help="show the window, wait for the devices, train a tiny model in a worker process, print "
                   "a JSON line and exit (packaging check)")
    p.set_defaults(func=run)


def run_default(args: argparse.Namespace | None = None) -> int:
    """`tinymlops` without a command: the GUI on the embedded default."""
    from app.services.app_session import DEFAULT_DEVICE_COUNT

    ns = argparse.Namespace(broker=None, devices=DEFAULT_DEVICE_COUNT, smoke_test=False)
    for key in ("broker", "devices", "smoke_test"):
        if args is not None and getattr(args, key, None) is not None:
            setattr(ns, key, getattr(args, key))
    return run(ns)


def run(args: argparse.Namespace) -> int:
    """Check the arguments, then hand over to the Qt side (app.ui.launch): Qt stays in app/ui."""
    started = time.perf_counter()
    from app.domain.errors import LinkError
    from app.transport.urls import parse_broker_url

    if args.broker:
        try:
            parse_broker_url(args.broker)
        except LinkError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.devices < 1:
        print("error: --devices must be at least 1", file=sys.stderr)
        return 2
    if no_display():
        if not args.smoke_test:
            print(NO_DISPLAY_MESSAGE, file=sys.stderr)
            return 2
        os.environ["QT_QPA_PLATFORM"] = "offscreen"  # the check needs no one to look at the window
    from app.ui.launch import run_gui

    return run_gui(args.broker, args.devices, smoke_test=args.smoke_test, started=started)
