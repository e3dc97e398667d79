"""The QEMU device fixture: the real firmware (firmware/ports/qemu-mps2-an386) on an emulated
Cortex-M4 whose UART0 is a TCP server; pyserial reaches it as `socket://127.0.0.1:PORT`."""

from __future__ import annotations

import fcntl
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.protocol import messages as m
from app.protocol.framing import FrameDecoder, frame

ROOT = Path(__file__).resolve().parents[2]
PORT_DIR = ROOT / "firmware" / "ports" / "qemu-mps2-an386"
ELF = PORT_DIR / "build" / "tinymlops.elf"
DATA = ROOT / "firmware" / "tests" / "data"
# -icount shift: each emulated instruction advances virtual time by 2**3 ns (125 MIPS), close to
# the 120 MHz STM32L4R5 of MLPerf Tiny; timings are deterministic and reported as EMULATED.
ICOUNT_SHIFT = 3
# QEMU opens its TCP server within a few hundred ms; a loaded CI machine gets this long.
QEMU_START_TIMEOUT_S = 20.0
# Building the image from scratch takes a few seconds with arm-none-eabi-gcc.
BUILD_TIMEOUT_S = 300
# Tensor arena per model instance of the small-arena build variant (Makefile ARENA_SIZE): above the
# factory model's need (1200 B on the C engine), so the device boots with its model, and below
# firmware/tests/data/wide_v5.tmlm's (2576 B), so pushing that model meets ARENA_TOO_SMALL. The real
# profile's 256 KB would need a > 512 KB image to exceed (arena need <= weights for dense layers):
# a second ~1 s build is cheaper in CI than a ~12 s transfer.
SMALL_ARENA = 2048
# Boot (factory install, SHA-256 checks, model load and self-test) takes well under a second of
# emulated time; a loaded CI machine gets this long to answer the fixture's first GET_INFO.
DEVICE_READY_TIMEOUT_S = 30.0
# How long one socket read waits before the deadline is checked again.
READY_POLL_S = 0.5
READY_SEQ = 0xFFF0  # seqs from here up no test uses
# A boot probe lost to a receiver that is not on yet is asked again after this long (a boot takes
# well under a second of emulated time); at most READY_MAX_PROBES probes fit the seqs above.
READY_RESEND_S = 2.0
READY_MAX_PROBES = 15


@dataclass
class QemuDevice:
    url: str
    port: int
    process: subprocess.Popen


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _build(*make_args: str, port_dir: Path = PORT_DIR) -> None:
    for tool in ("qemu-system-arm", "arm-none-eabi-gcc", "make"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: apt-get install qemu-system-arm gcc-arm-none-eabi "
                        "libnewlib-arm-none-eabi make")
    # pytest-xdist workers share the build directories and firmware/build-deps: one make at a time
    with open(ROOT / "firmware" / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run(["make", "-s", "-C", str(port_dir), *make_args], check=True, timeout=BUILD_TIMEOUT_S)


@pytest.fixture(scope="session")
def firmware_elf() -> Path:
    _build()
    return ELF


@pytest.fixture(scope="session")
def small_arena_elf() -> Path:
    """The same firmware built with SMALL_ARENA bytes of tensor arena per model instance."""
    _build(f"ARENA_SIZE={SMALL_ARENA}")
    return PORT_DIR / "build" / f"arena-{SMALL_ARENA}" / "tinymlops.elf"


def _boot(elf: Path, machine: str = "mps2-an386", serial_index: int = 0) -> Iterator[QemuDevice]:
    """Boot `elf` on `machine` with its serial_index-th UART (QEMU wires each -serial to the next
    UART in order) as the TCP server; the ones before it go to null."""
    port = _free_port()
    proc = subprocess.Popen(
        ["qemu-system-arm", "-M", machine, "-nographic", "-monitor", "none",
         "-icount", f"shift={ICOUNT_SHIFT}", *["-serial", "null"] * serial_index,
         "-serial", f"tcp:127.0.0.1:{port},server=on,wait=off", "-kernel", str(elf)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + QEMU_START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            pytest.fail(f"qemu-system-arm exited with {proc.returncode}: {out}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("QEMU did not open its serial socket")
            time.sleep(0.05)
    try:
        _wait_until_booted(port, proc)
        yield QemuDevice(f"socket://127.0.0.1:{port}", port, proc)
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _wait_until_booted(port: int, proc: subprocess.Popen) -> None:
    """Return once the device answers GET_INFO: it has finished booting and sent its own BOOTED
    event and HELLO, so a test never sees that announcement among the replies it counts.

    Some UART models drop what arrives before the firmware enables its receiver (QEMU's STM32
    USART does; the mps2 UART holds it back), so the probe asks again every READY_RESEND_S, each
    time with the next seq. Once one is answered, every later one will be too (the receiver is on),
    so the probe returns only when the device has answered all of those: no late reply to a probe
    ever reaches the test's own connection."""
    decoder = FrameDecoder()
    deadline = time.monotonic() + DEVICE_READY_TIMEOUT_S
    sent, next_send, answered = 0, 0.0, set()
    with socket.create_connection(("127.0.0.1", port), timeout=READY_POLL_S) as s:
        while time.monotonic() < deadline and proc.poll() is None:
            if not answered and time.monotonic() >= next_send and sent < READY_MAX_PROBES:
                s.sendall(frame(m.encode(m.GetInfo(), READY_SEQ + sent)))
                sent, next_send = sent + 1, time.monotonic() + READY_RESEND_S
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                continue
            for msg in decoder.feed(chunk):
                packet = m.decode(msg)
                if isinstance(packet.msg, m.Hello) and READY_SEQ <= packet.seq < READY_SEQ + sent:
                    answered.add(packet.seq)
            if answered and set(range(min(answered), READY_SEQ + sent)) <= answered:
                return
    proc.kill()
    pytest.fail(f"the emulated device did not answer GET_INFO within {DEVICE_READY_TIMEOUT_S} s")


@pytest.fixture
def qemu_device(firmware_elf: Path) -> Iterator[QemuDevice]:
    """A freshly booted emulated device (empty model flash: it installs its factory model)."""
    yield from _boot(firmware_elf)


@pytest.fixture
def small_arena_device(small_arena_elf: Path) -> Iterator[QemuDevice]:
    """A freshly booted emulated device whose tensor arenas are SMALL_ARENA bytes each."""
    yield from _boot(small_arena_elf)
