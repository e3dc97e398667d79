"""Flash firmware onto a board with its vendor tool, verify the write, and wait for the new firmware.

The board registry (app/deploy/boards.py) says which tools write a board and with which arguments;
this module picks an installed one, runs it as a subprocess, turns its output into typed progress
(`FlashProgress`) and its failures into one sentence (no probe, no permission, verify mismatch), and
finally, when a serial port is given, asks the freshly booted firmware for its HELLO. A flash that
ends in anything but "written, verified and (if asked) answering" raises FlashError saying which of
those steps failed, so nobody walks away from a half-written board believing it is fine.

It lives in app.deploy because it uses a device channel (app.services) for the HELLO; it has no Qt
and never prints: the CLI draws a bar from the callbacks, the GUI a progress dialog.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from app.deploy.boards import Board, FlashTool, get_board
from app.domain.errors import Cancelled, LinkError, TinyMLOpsError
from app.protocol import messages as m
from app.protocol.framing import DEFAULT_BAUD

log = logging.getLogger(__name__)

# Longest a flash tool may run: a 512 KB STM32F4 erase + write + read-back takes ~20 s with openocd,
# a 4 MB ESP32 image ~60 s at 460800 baud; beyond this the probe or the line is hung.
FLASH_TIMEOUT_S = 180.0
# After the reset, time the new firmware gets to boot and answer GET_INFO on the serial port
# (the STM32F4 image answers within a second; USB serial adapters may re-enumerate on reset).
HELLO_TIMEOUT_S = 20.0
# One GET_INFO attempt waits this long for the HELLO before the port is reopened and asked again.
HELLO_ATTEMPT_S = 1.0
# The watchdog wakes this often to notice a cancel request while the tool runs.
CANCEL_POLL_S = 0.2
# Lines of tool output kept for the error sentence and the log.
OUTPUT_TAIL_LINES = 40
# Largest read from the tool's pipe at once.
READ_CHUNK = 4096


class FlashError(TinyMLOpsError):
    """Flashing failed or could not start; the message is one sentence for the user."""


class FlashStage(Enum):
    PREPARE = "prepare"
    WRITE = "write"
    VERIFY = "verify"
    RESET = "reset"
    HELLO = "hello"
    DONE = "done"


@dataclass(frozen=True)
class FlashProgress:
    """One step of a flash: `percent` of the whole job (0-100), and a line to show."""

    stage: FlashStage
    percent: int
    text: str


FlashCallback = Callable[[FlashProgress], None]


@dataclass(frozen=True)
class FlashPlan:
    """What will run: the board, the tool, the image it takes, and the exact command line."""

    board: Board
    tool: FlashTool
    image: Path
    argv: tuple[str, ...]
    port: str | None = None


@dataclass(frozen=True)
class FlashResult:
    plan: FlashPlan
    verified: bool
    firmware: str | None = None  # HELLO's firmware field; None when no --port was given
    device_id: str | None = None
    profile: str | None = None


# Share of the progress bar each stage spans (writing dominates).
_SPAN = {FlashStage.PREPARE: (0, 5), FlashStage.WRITE: (5, 75), FlashStage.VERIFY: (75, 90),
         FlashStage.RESET: (90, 92), FlashStage.HELLO: (92, 99), FlashStage.DONE: (100, 100)}


def _progress(stage: FlashStage, fraction: float, text: str) -> FlashProgress:
    lo, hi = _SPAN[stage]
    return FlashProgress(stage, int(lo + (hi - lo) * max(0.0, min(1.0, fraction))), text)


# --------------------------------------------------------------------------- tool output

# Per tool: (pattern, stage, fraction or None to take the percentage the pattern captured).
_MARKERS: dict[str, tuple[tuple[re.Pattern[str], FlashStage, float | None], ...]] = {
    "openocd": (
        (re.compile(r"\*\* Programming Started \*\*"), FlashStage.WRITE, 0.0),
        (re.compile(r"\*\* Programming Finished \*\*"), FlashStage.WRITE, 1.0),
        (re.compile(r"\*\* Verify Started \*\*"), FlashStage.VERIFY, 0.0),
        (re.compile(r"\*\* Verified OK \*\*"), FlashStage.VERIFY, 1.0),
        (re.compile(r"\*\* Resetting Target \*\*"), FlashStage.RESET, 1.0),
    ),
    "st-flash": (
        # libstlink 1.7 prints pages, half-pages or bytes written depending on the family
        (re.compile(r"(\d+)/\s*(\d+) (?:half)?(?:pages|bytes) written"), FlashStage.WRITE, None),
        (re.compile(r"Starting verification"), FlashStage.VERIFY, 0.0),
        (re.compile(r"Flash written and verified"), FlashStage.VERIFY, 1.0),
    ),
    "esptool": (
        (re.compile(r"Writing at 0x[0-9a-fA-F]+.*?(\d+(?:\.\d+)?) ?%"), FlashStage.WRITE, None),
        (re.compile(r"Hash of data verified"), FlashStage.VERIFY, 1.0),
        (re.compile(r"Hard resetting"), FlashStage.RESET, 1.0),
    ),
}
# The line each tool prints only when the read-back matched: without it a flash is not "done".
_VERIFIED = {"openocd": "** Verified OK **", "st-flash": "Flash written and verified",
             "esptool": "Hash of data verified"}

# Known failures, as (pattern in the output, sentence). The first match names the cause.
_NO_PROBE = "no ST-LINK probe found: connect the board's USB (ST-LINK) connector, check the cable, and try again"
_FAILURES: dict[str, tuple[tuple[re.Pattern[str], str], ...]] = {
    "openocd": (
        (re.compile(r"LIBUSB_ERROR_ACCESS|permission denied", re.I),
         "the ST-LINK probe is there but this user may not open it: install the udev rules "
         "(/usr/lib/udev/rules.d/60-openocd.rules) or add the user to the plugdev group"),
        (re.compile(r"open failed|unable to find|no device found|could not find", re.I), _NO_PROBE),
        (re.compile(r"Verify Failed|checksum mismatch|contents differ", re.I),
         "the flash does not match the image after writing (verify failed): flash again before using the board"),
        (re.compile(r"init mode failed|unable to connect to the target|target not examined", re.I),
         "the ST-LINK probe answered but the MCU did not: check the board's power and the ST-LINK jumpers"),
    ),
    "st-flash": (
        (re.compile(r"Couldn't find any ST-Link", re.I), _NO_PROBE),
        (re.compile(r"LIBUSB_ERROR_ACCESS|permission", re.I),
         "the ST-LINK probe is there but this user may not open it: install the stlink udev rules "
         "or add the user to the plugdev group"),
        (re.compile(r"Verification of flash failed|verify failed", re.I),
         "the flash does not match the image after writing (verify failed): flash again before using the board"),
        (re.compile(r"unknown chip id|Failed to enter SWD mode|target voltage", re.I),
         "the ST-LINK probe answered but the MCU did not: check the board's power and the ST-LINK jumpers"),
    ),
    "esptool": (
        (re.compile(r"could not open port|No such file or directory|port doesn't exist", re.I),
         "the serial port could not be opened: check --port and that the board is plugged in"),
        (re.compile(r"Failed to connect|No serial data received|Wrong boot mode", re.I),
         "the ESP32 did not answer on the serial port: hold BOOT while it resets, or check the port"),
        (re.compile(r"MD5 of file does not match|verify failed", re.I),
         "the flash does not match the image after writing (verify failed): flash again before using the board"),
    ),
}


def _failure_sentence(tool: FlashTool, rc: int, tail: list[str]) -> str:
    text = "\n".join(tail)
    for pattern, sentence in _FAILURES.get(tool.name, ()):
        if pattern.search(text):
            return f"{tool.name}: {sentence}"
    errors = [line for line in tail if re.search(r"error|fail|fatal", line, re.I)]
    last = (errors or [line for line in tail if line.strip()] or ["no output"])[-1].strip()
    return f"{tool.name} failed (exit status {rc}): {last}"


# --------------------------------------------------------------------------- plan

ToolFinder = Callable[[str], "str | None"]


def _launcher(tool: FlashTool, which: ToolFinder) -> list[str] | None:
    """The argv prefix that starts the tool, or None when it is not installed. esptool installed as
    a package of this Python (the `flash` extra) but not on PATH runs as `python -m esptool`."""
    if which(tool.program):
        return [tool.program]
    if tool.name == "esptool" and not getattr(sys, "frozen", False) and importlib.util.find_spec("esptool"):
        return [sys.executable, "-m", "esptool"]
    return None


def installed_tools(board: Board, which: ToolFinder = shutil.which) -> list[FlashTool]:
    """The board's tools that are installed here, in the registry's order of preference."""
    return [t for t in board.tools if _launcher(t, which) is not None]


def _image_for(tool: FlashTool, image: Path) -> Path:
    """The file the tool takes: itself, or its sibling in the tool's format from the same build."""
    if image.suffix.lower() in tool.formats:
        return image
    for suffix in tool.formats:
        sibling = image.with_suffix(suffix)
        if sibling.is_file():
            return sibling
    raise FlashError(f"{tool.name} takes {' or '.join(tool.formats)} images and {image.name} has no "
                     f"{' or '.join(tool.formats)} beside it: pass one with --image or choose another tool")


def plan_flash(board_key: str, image: str | Path | None = None, tool: str | None = None, port: str | None = None,
               which: ToolFinder = shutil.which) -> FlashPlan:
    """Choose the tool and the image and build the exact command line; nothing runs yet.

    FlashError (a sentence) for an unknown board or tool, no installed tool, a missing image or a
    tool that needs a serial port without one."""
    board = get_board(board_key)
    if tool is not None:
        chosen = board.tool(tool)
        launcher = _launcher(chosen, which)
        if launcher is None:
            raise FlashError(f"{chosen.name} is not installed: install {chosen.package}")
    else:
        found = [(t, _launcher(t, which)) for t in board.tools]
        ready = [(t, launch) for t, launch in found if launch is not None]
        if not ready:
            raise FlashError(f"no flash tool for {board.key} is installed: install "
                             + " or ".join(t.package for t in board.tools))
        chosen, launcher = ready[0]
    assert launcher is not None
    path = Path(image).expanduser() if image is not None else board.default_image()
    if not path.is_file():
        raise FlashError(f"firmware image {path} does not exist or is not a file")
    path = _image_for(chosen, path.resolve())
    if chosen.needs_port and not port:
        raise FlashError(f"{chosen.name} writes {board.key} over its serial port: pass --port")
    values = {"image": str(path), "address": f"0x{board.address:08x}", "port": port or ""}
    argv = tuple(launcher) + tuple(arg.format(**values) for arg in chosen.args)
    return FlashPlan(board, chosen, path, argv, port)


# --------------------------------------------------------------------------- run

def run_tool(plan: FlashPlan, progress: FlashCallback | None = None,
             cancel: threading.Event | None = None, timeout: float = FLASH_TIMEOUT_S) -> list[str]:
    """Run the plan's command; returns its last output lines. FlashError with the cause's sentence
    when it fails or does not report a verified write, Cancelled when `cancel` is set (the board
    may then hold a partial image, and the message says so)."""
    cancel = cancel or threading.Event()
    emit = progress or (lambda _p: None)
    log.info("flashing %s: %s", plan.board.key, " ".join(plan.argv))
    try:
        proc = subprocess.Popen(plan.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise FlashError(f"could not start {plan.tool.name}: {exc.strerror or exc}") from None
    stopped: list[str] = []

    deadline = time.monotonic() + timeout

    def watchdog() -> None:
        while proc.poll() is None:
            if cancel.wait(CANCEL_POLL_S):
                stopped.append("cancelled")
            elif time.monotonic() < deadline:
                continue
            else:
                stopped.append("timeout")
            proc.kill()
            return

    guard = threading.Thread(target=watchdog, name="flash-watchdog", daemon=True)
    guard.start()
    tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
    verified = False
    pending = b""
    assert proc.stdout is not None
    while chunk := proc.stdout.read1(READ_CHUNK):
        pending += chunk
        *lines, pending = re.split(rb"[\r\n]", pending)
        for raw in lines:
            line = raw.decode("utf-8", "replace").strip()
            if line:
                tail.append(line)
                verified |= _VERIFIED[plan.tool.name] in line
                _report(plan.tool.name, line, emit)
    if pending.strip():
        tail.append(pending.decode("utf-8", "replace").strip())
        verified |= _VERIFIED[plan.tool.name] in tail[-1]
    proc.stdout.close()
    rc = proc.wait()
    guard.join()
    lines = list(tail)
    for line in lines:
        log.debug("%s: %s", plan.tool.name, line)
    if stopped and stopped[0] == "cancelled":
        raise Cancelled(f"flashing {plan.board.key} was stopped: the board may hold a partial image, "
                        "flash it again before using it")
    if stopped:
        raise FlashError(f"{plan.tool.name} did not finish within {timeout:g} s and was stopped: "
                         "the board may hold a partial image, flash it again")
    if rc != 0:
        raise FlashError(_failure_sentence(plan.tool, rc, lines))
    if not verified:
        raise FlashError(f"{plan.tool.name} ended without reporting a verified write "
                         f"(no {_VERIFIED[plan.tool.name]!r} in its output): flash again before using the board")
    return lines


def _report(tool: str, line: str, emit: FlashCallback) -> None:
    for pattern, stage, fraction in _MARKERS.get(tool, ()):
        match = pattern.search(line)
        if not match:
            continue
        if fraction is None:
            groups = [float(g) for g in match.groups()]
            fraction = groups[0] / groups[1] if len(groups) == 2 and groups[1] else groups[0] / 100.0
        emit(_progress(stage, fraction, line))
        return


def wait_hello(port: str, baud: int = DEFAULT_BAUD, timeout: float = HELLO_TIMEOUT_S,
               cancel: threading.Event | None = None) -> m.Hello:
    """Ask the device on `port` for its HELLO until it answers or `timeout` passes.

    The port is reopened for each attempt: a USB serial adapter may vanish and come back while the
    board resets. FlashError when nothing answers in time."""
    from app.services.channel import SerialChannel  # the deploy layer may use channels

    cancel = cancel or threading.Event()
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if cancel.is_set():
            raise Cancelled("stopped while waiting for the device's HELLO")
        try:
            channel = SerialChannel.open(port, baud)
        except LinkError as exc:
            last = str(exc)
            # the port is not there (yet): give the board an attempt's time to come back
            if cancel.wait(HELLO_ATTEMPT_S):
                raise Cancelled("stopped while waiting for the device's HELLO") from None
            continue
        with channel:
            try:
                return channel.request(m.GetInfo(), timeout=HELLO_ATTEMPT_S, retries=0, cancel=cancel).msg
            except LinkError as exc:
                last = str(exc)
    raise FlashError(f"the image was written and verified, but no HELLO came on {port} within {timeout:g} s "
                     f"({last}): check that {port} is the board's serial port and that it booted")


def flash(board_key: str, image: str | Path | None = None, tool: str | None = None, port: str | None = None,
          baud: int | None = None, progress: FlashCallback | None = None, cancel: threading.Event | None = None,
          which: ToolFinder = shutil.which, hello_timeout: float = HELLO_TIMEOUT_S) -> FlashResult:
    """Write, verify and reset the board; with `port`, wait for the firmware's HELLO (at `baud`, by
    default the board's firmware rate) and check that it reports the board's profile. FlashError
    (one sentence) at the first step that fails."""
    emit = progress or (lambda _p: None)
    plan = plan_flash(board_key, image, tool, port, which)
    emit(_progress(FlashStage.PREPARE, 1.0, f"{plan.tool.name}: {plan.image.name} to {plan.board.name}"))
    run_tool(plan, emit, cancel)
    if not port:
        emit(_progress(FlashStage.DONE, 1.0, "written and verified"))
        return FlashResult(plan, verified=True)
    emit(_progress(FlashStage.HELLO, 0.0, f"waiting for the firmware's HELLO on {port}"))
    hello = wait_hello(port, baud or plan.board.baud, hello_timeout, cancel)
    if hello.profile != plan.board.profile:
        raise FlashError(f"the image was written and verified, but the device on {port} reports profile "
                         f"{hello.profile!r}, not {plan.board.profile!r}: is {port} this board's serial port?")
    emit(_progress(FlashStage.DONE, 1.0, f"{hello.device_id} runs {hello.firmware}"))
    return FlashResult(plan, verified=True, firmware=hello.firmware, device_id=hello.device_id, profile=hello.profile)
