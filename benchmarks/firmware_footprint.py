"""Firmware figures for the README: the portable core's flash and RAM on a Cortex-M4
(arm-none-eabi-size of the objects the QEMU image links), the STM32F4 port's two images against
the F446's flash region and SRAM, the emulated instruction count per
inference for the factory model and the MLPerf Tiny AD autoencoder, and a serial deployment to
the emulated device with its three latencies (deployment, loading, inference).

The firmware runs on QEMU mps2-an386 with `-icount shift=3`: every instruction advances virtual
time by 8 ns, so the device's microsecond clock counts instructions (us * 1000 / 8). These are
EMULATED figures (QEMU does not model Cortex-M4 pipeline timing), never real-hardware ones.
Reference measured in the same run: the real TFLM interpreter (PyPI tflite-micro) on this host
for the same models, and the UART line-rate floor for the image at 115200 baud.

    python3 -m benchmarks.firmware_footprint
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.protocol import messages as m
from app.protocol.image import ModelImage

ROOT = Path(__file__).resolve().parents[1]
PORT_DIR = ROOT / "firmware" / "ports" / "qemu-mps2-an386"
ELF = PORT_DIR / "build" / "tinymlops.elf"
DATA = ROOT / "firmware" / "tests" / "data"
FACTORY = ROOT / "resources" / "models" / "factory.tmlm"
# ns of virtual time per emulated instruction is 2**ICOUNT_SHIFT.
ICOUNT_SHIFT = 3
# Inferences per BENCHMARK: the emulator is deterministic, a few suffice.
BENCH_COUNT = 20
# Host TFLM timing: median of this many invokes.
HOST_REPEATS = 200
# A 330 KB image crosses the emulated UART in about ten seconds; a loaded machine gets more.
DEPLOY_TIMEOUT_S = 300
QEMU_START_TIMEOUT_S = 20.0
BAUD = 115200
STM32F4_DIR = ROOT / "firmware" / "ports" / "stm32f4"
# The F446 image's budgets (firmware/ports/stm32f4/f446.ld): flash sectors 0-4 (the store has 5-7), all SRAM.
F446_FIRMWARE_FLASH = 128 * 1024
F446_SRAM = 128 * 1024
# Objects of firmware/core that only the emulator links (the deterministic vibration source stands
# in for the accelerometer; the ESP32 port reads an ADXL345): listed apart from the core total.
EMULATOR_ONLY = frozenset({"tm_vibration"})


def sizes() -> list[tuple[str, int, int, int]]:
    subprocess.run(["make", "-s", "-C", str(PORT_DIR)], check=True)
    objs = sorted((PORT_DIR / "build").glob("tm_*.o"))
    out = subprocess.run(["arm-none-eabi-size", *map(str, objs)], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines()[1:]:
        text, data, bss, *_rest, name = line.split()
        rows.append((Path(name).stem, int(text), int(data), int(bss)))
    return rows


def symbol_sizes() -> dict[str, int]:
    out = subprocess.run(["arm-none-eabi-nm", "-S", "--size-sort", str(ELF)], capture_output=True, text=True,
                         check=True).stdout
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4:
            found[parts[3]] = int(parts[1], 16)
    return found


def stm32f4_sizes() -> None:
    """Flash (text + data) and RAM (data + bss, the stack included) of the STM32F4 port's images."""
    subprocess.run(["make", "-s", "-C", str(STM32F4_DIR)], check=True)
    print("STM32F4 port (firmware/ports/stm32f4), whole images:")
    print(f"  {'image':<44}{'flash B':>9}{'RAM B':>9}")
    for board, label in (("f446", "Nucleo-F446RE (flash driver)"), ("qemu", "QEMU netduinoplus2 (store in SRAM)")):
        elf = STM32F4_DIR / "build" / board / "tinymlops.elf"
        line = subprocess.run(["arm-none-eabi-size", str(elf)], capture_output=True, text=True,
                              check=True).stdout.splitlines()[1]
        text, data, bss = (int(v) for v in line.split()[:3])
        print(f"  {label:<44}{text + data:>9}{data + bss:>9}")
        if board == "f446":
            print(f"  {'  budget: flash sectors 0-4, SRAM':<44}{F446_FIRMWARE_FLASH:>9}{F446_SRAM:>9}")


def start_qemu() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-monitor", "none",
                             "-icount", f"shift={ICOUNT_SHIFT}", "-serial", f"tcp:127.0.0.1:{port},server=on,wait=off",
                             "-kernel", str(ELF)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + QEMU_START_TIMEOUT_S
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"socket://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise SystemExit("QEMU did not start") from None
            time.sleep(0.05)


def host_tflm_us(image: bytes) -> float:
    from tflite_micro.python.tflite_micro import runtime

    img = ModelImage.from_bytes(image)
    interp = runtime.Interpreter.from_bytes(img.tflite, arena_size=1 << 20)
    x = np.zeros((1, img.n_features), np.int8)
    times = []
    for _ in range(HOST_REPEATS):
        interp.set_input(x, 0)
        t0 = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e6


def insns(us: int) -> int:
    return us * 1000 >> ICOUNT_SHIFT


# The signature-check image prints one line within a few emulated seconds; a loaded host gets longer.
SIGN_BENCH_TIMEOUT_S = 120


def signature_check() -> tuple[int, int, int]:
    """(flash bytes of the signature check, runs, emulated us for them) on the Cortex-M4: the size of
    tm_sign plus the Ed25519 objects it links, and the time of the golden valid case in QEMU."""
    subprocess.run(["make", "-s", "-C", str(PORT_DIR), "bench-sign"], check=True)
    objs = [PORT_DIR / "build" / "tm_sign.o", *sorted((PORT_DIR / "build" / "ed25519").glob("*.o"))]
    out = subprocess.run(["arm-none-eabi-size", *map(str, objs)], capture_output=True, text=True, check=True).stdout
    flash = sum(int(line.split()[0]) + int(line.split()[1]) for line in out.splitlines()[1:])
    proc = subprocess.Popen(["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-monitor", "none",
                             "-icount", f"shift={ICOUNT_SHIFT}", "-serial", "stdio",
                             "-kernel", str(PORT_DIR / "build" / "bench_sign.elf")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + SIGN_BENCH_TIMEOUT_S
        while time.monotonic() < deadline:
            line = proc.stdout.readline() if proc.stdout else ""
            if line.startswith("sign-bench"):
                fields = dict(part.split("=") for part in line.split()[1:])
                if fields["ok"] != fields["runs"]:
                    raise SystemExit(f"signature check failed in the emulator: {line.strip()}")
                return flash, int(fields["runs"]), int(fields["us"])
        raise SystemExit("the signature benchmark image printed nothing")
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    rows = sizes()
    core = [r for r in rows if r[0] not in EMULATOR_ONLY]
    emulator = [r for r in rows if r[0] in EMULATOR_ONLY]
    print("Portable core (firmware/core) for Cortex-M4F, arm-none-eabi-gcc -O2 -mthumb, per object:")
    print(f"  {'module':<28}{'flash (text+data)':>18}{'RAM (data+bss)':>16}")
    for name, text, data, bss in core:
        print(f"  {name:<28}{text + data:>18}{data + bss:>16}")
    print(f"  {'core total (every port)':<28}{sum(r[1] + r[2] for r in core):>18}{sum(r[2] + r[3] for r in core):>16}")
    for name, text, data, bss in emulator:
        print(f"  {name + ' (emulator only)':<28}{text + data:>18}{data + bss:>16}")
    print(f"  {'total linked by the emulator':<28}{sum(r[1] + r[2] for r in rows):>18}"
          f"{sum(r[2] + r[3] for r in rows):>16}")
    syms = symbol_sizes()
    print("Whole QEMU image: " + subprocess.run(["arm-none-eabi-size", str(ELF)], capture_output=True, text=True)
          .stdout.splitlines()[1].strip())
    arenas = syms.get("arena0", 0) + syms.get("arena1", 0)
    print(f"  statically allocated RAM: device state {syms.get('dev', 0)} B, two tensor arenas {arenas} B, "
          f"emulated model flash {syms.get('flash_mem', 0)} B")
    stm32f4_sizes()

    flash, runs, us = signature_check()
    per_check = insns(us) // runs
    print(f"\nSignature check (Ed25519, SUPERCOP ref fetched at build time; PROTOCOL.md 6.2) on the emulated "
          f"Cortex-M4: flash {flash} B (tm_sign + Ed25519), {per_check:,} instructions per check "
          f"({us / runs / 1000:.1f} ms EMULATED at 8 ns per instruction; {runs} checks)")

    from app.deploy.api import deploy
    from app.services.channel import SerialChannel

    os.environ["TINYMLOPS_DATA_DIR"] = tempfile.mkdtemp(prefix="tinymlops-bench-")
    proc, url = start_qemu()
    try:
        results = []
        ch = SerialChannel.open(url)
        lat = ch.request(m.Benchmark(BENCH_COUNT), timeout=30).msg
        hello = ch.request(m.GetInfo()).msg
        ch.close()
        results.append((f"{hello.model_name} v{hello.model_version} (default)", FACTORY.read_bytes(), lat, None))
        for name in ("factory_v2.tmlm", "mlperf_ad_v4.tmlm"):
            image = (DATA / name).read_bytes()
            res = deploy(image, None, via="serial", port=url, bench_count=BENCH_COUNT)[0]
            if not res.ok:
                raise SystemExit(f"deployment of {name} failed: {res.error_message}")
            results.append((f"{res.model_name} v{res.model_version}", image, None, res))
    finally:
        proc.kill()
        proc.wait()

    print(f"\nInference on the emulated Cortex-M4 (QEMU -icount shift={ICOUNT_SHIFT}: 1 instruction = "
          f"{2 ** ICOUNT_SHIFT} ns, EMULATED) vs the real TFLM on this host:")
    print(f"  {'model':<26}{'image B':>9}{'emu us':>9}{'instructions':>14}{'host TFLM us':>14}{'ratio':>8}")
    for label, image, lat, res in results:
        median = lat.median_us if lat else res.inference_median_us
        host = host_tflm_us(image)
        print(f"  {label:<26}{len(image):>9}{median:>9}{insns(median):>14}{host:>14.1f}{median / host:>8.1f}")

    print("\nSerial deployments to the emulated device (TCP socket, no baud limit; line-rate floor at "
          f"{BAUD} baud shown as the reference):")
    print(f"  {'model':<22}{'wire B':>9}{'host s':>8}{'device deploy ms':>18}{'load us':>9}"
          f"{'infer us':>9}{'floor s':>9}{'host/floor':>11}")
    for label, _image, _lat, res in results[1:]:
        floor = res.wire_bytes / (BAUD / 10)
        print(f"  {label:<22}{res.wire_bytes:>9}{res.host_deploy_s:>8.2f}{res.device_deploy_us / 1000:>18.1f}"
              f"{res.load_us:>9}{res.inference_median_us:>9}{floor:>9.2f}{res.host_deploy_s / floor:>11.2f}")
    print("  (device deploy = XFER_BEGIN received to image verified, device clock; load = parse + plan + "
          "requantisation constants; infer = normalise + quantise + invoke + score)")


if __name__ == "__main__":
    main()
