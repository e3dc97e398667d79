"""`tinymlops firmware list | flash`: the boards the app can flash, and flashing one.

`flash` writes the board's prebuilt image (or --image) with the first installed tool of the board's
registry entry (app/deploy/boards.py), which verifies the write; with --port it then waits for the
new firmware's HELLO and prints the firmware version it reports. Exit 0 only when all of that
happened; any failure is one sentence on standard error (exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading

from app.cli.cancellable import run_cancellable

# Width of the progress bar in characters (as `deploy`'s).
BAR_WIDTH = 30


def register(sub) -> None:
    fw = sub.add_parser("firmware", help="boards and their prebuilt firmware: list, flash",
                        description=__doc__.split("\n\n")[1].replace("\n", " "))
    fsub = fw.add_subparsers(dest="firmware_command", metavar="ACTION", required=True)
    p = fsub.add_parser("list", help="every board: MCU, profile, flash tools (installed or not) and image")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)
    p = fsub.add_parser("flash", help="write the firmware to a board, verify it, and wait for its HELLO")
    p.add_argument("--board", required=True, help="board key (see `tinymlops firmware list`)")
    p.add_argument("--image", help="image file (default: the board's prebuilt image)")
    p.add_argument("--tool", help="flash tool (default: the first installed one of the board's tools)")
    p.add_argument("--port", help="the board's serial port: wait for its HELLO after flashing "
                   "(required by esptool, which flashes through it)")
    p.add_argument("--baud", type=int, default=None,
                   help="the firmware's serial line rate for its HELLO (default: the board's, e.g. 115200 for STM32)")
    p.add_argument("--dry-run", action="store_true", help="print the command that would run, and stop")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_flash)


def cmd_list(args: argparse.Namespace) -> int:
    from app.deploy.boards import BOARDS, BoardError
    from app.deploy.flash import installed_tools

    rows = []
    for board in BOARDS.values():
        installed = {t.name for t in installed_tools(board)}
        try:
            image = str(board.default_image())
        except BoardError:
            image = None
        rows.append({"board": board.key, "name": board.name, "mcu": board.mcu, "profile": board.profile,
                     "tools": [t.name for t in board.tools], "installed": sorted(installed),
                     "image": image, "address": f"0x{board.address:08x}"})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [[r["board"], r["mcu"], r["profile"],
              ", ".join(t + ("" if t in r["installed"] else " (not installed)") for t in r["tools"]),
              r["image"] or "not built"] for r in rows]
    header = ["board", "MCU", "profile", "tools", "image"]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *table, strict=False)]
    for line in [header, *table]:
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    return 0


class _Bar:
    """One carriage-return progress line on a terminal; silent otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.drawn = False

    def __call__(self, step) -> None:
        if not self.enabled:
            return
        fill = step.percent * BAR_WIDTH // 100
        sys.stderr.write(f"\r[{'#' * fill}{'.' * (BAR_WIDTH - fill)}] {step.percent:3d}% {step.text[:60]:<60}")
        sys.stderr.flush()
        self.drawn = True

    def finish(self) -> None:
        if self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()


def cmd_flash(args: argparse.Namespace) -> int:
    from app.deploy import flash as fl

    if args.dry_run:
        plan = fl.plan_flash(args.board, args.image, args.tool, args.port)
        print(" ".join(_quote(a) for a in plan.argv))
        return 0
    bar = _Bar(enabled=sys.stderr.isatty() and not args.json)
    def work(cancel: threading.Event):
        return fl.flash(args.board, args.image, args.tool, args.port, args.baud, progress=bar, cancel=cancel)

    # in a worker so that Ctrl-C stops the tool (and says the board may hold a partial image)
    try:
        result = run_cancellable(work, "flash")
    finally:
        bar.finish()
    if args.json:
        print(json.dumps({"board": result.plan.board.key, "tool": result.plan.tool.name,
                          "image": str(result.plan.image), "command": list(result.plan.argv),
                          "verified": result.verified, "device_id": result.device_id,
                          "firmware": result.firmware, "profile": result.profile}, indent=2))
        return 0
    print(f"{result.plan.board.key}: {result.plan.image.name} written and verified with {result.plan.tool.name}")
    if result.firmware is not None:
        print(f"{result.device_id} on {args.port} runs {result.firmware} (profile {result.profile})")
    return 0


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
