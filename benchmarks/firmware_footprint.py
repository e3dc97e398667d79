"""Firmware figures for the README: the portable core's flash and RAM on a Cortex-M4
(arm-none-eabi-size of the objects the QEMU image links), the STM32F4 port's two images against
the F446's flash region and SRAM, the engine's fully-connected kernels (the Cortex-M4 DSP one and
the portable C reference) on every engine test model, the emulated instruction count per
inference on the device for the factory model and the MLPerf Tiny AD autoencoder with either
kernel, and a serial deployment to the emulated device with its three latencies (deployment,
loading, inference).

The firmware runs on QEMU mps2-an386 with `-icount shift=3`: every instruction advances virtual
time by 8 ns, so the device's microsecond clock counts instructions (us * 1000 / 8). These are
EMULATED figures (QEMU does not model Cortex-M4 pipeline timing), never real-hardware ones.
Reference measured in the same run: the real TFLM interpreter (PyPI tflite-micro) on this host
for the same models (whose outputs the kernels match bit for bit), the portable C kernel for the
DSP one, and the UART line-rate floor for the image at 115200 baud; for scale, the MLPerf Tiny v0.5
reference result (TFLM with CMSIS-NN on a real 120 MHz Cortex-M4F) is printed next to the kernels.

    python3 -m benchmarks.firmware_footprint
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
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
# Images pushed to the emulated device after its factory model's benchmark.
DEPLOYED = ("factory_v2.tmlm", "mlperf_ad_v4.tmlm")
# The MLPerf Tiny v0.5 AD reference (TFLM + CMSIS-NN on the STM32L4R5 Nucleo, Cortex-M4F at 120 MHz):
# its published latency, and the cycles that makes; real hardware, not emulated.
MLPERF_REF_MS = 10.05
MLPERF_REF_MHZ = 120
# The engine test images run ~60 M emulated instructions between them (the portable kernel's 24
# MLPerf AD inferences dominate): a few seconds; a loaded machine gets this long.
ENGINE_RUN_TIMEOUT_S = 300
# Engine builds of the QEMU port: the target's own kernel (DSP on the Cortex-M4) and the portable one.
KERNELS = (("dsp", ()), ("portable", ("ENGINE=portable",)))
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


def fc_macs(tflite: bytes) -> int:
    """Multiply-accumulates of one inference: the weight elements of every FULLY_CONNECTED op."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(tflite, 0)
    codes = [max(model.OperatorCodes(i).BuiltinCode(), model.OperatorCodes(i).DeprecatedBuiltinCode())
             for i in range(model.OperatorCodesLength())]
    sub = model.Subgraphs(0)
    total = 0
    for o in range(sub.OperatorsLength()):
        op = sub.Operators(o)
        if codes[op.OpcodeIndex()] == schema.BuiltinOperator.FULLY_CONNECTED:
            total += int(np.prod(sub.Tensors(op.Inputs(1)).ShapeAsNumpy()))
    return total


def engine_kernels() -> dict[str, dict[str, dict[str, str]]]:
    """{kernel: {model: fields}}: the engine test image (bench_engine.c) of each kernel's build, run
    on QEMU: bit-exactness against TFLM's recorded outputs and emulated ns of its invokes."""
    found: dict[str, dict[str, dict[str, str]]] = {}
    for kernel, make_args in KERNELS:
        subprocess.run(["make", "-s", "-C", str(PORT_DIR), "bench-engine", *make_args], check=True)
        elf = PORT_DIR / "build" / ("portable" if make_args else "") / "bench_engine.elf"
        proc = subprocess.Popen(["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-monitor", "none",
                                 "-icount", f"shift={ICOUNT_SHIFT}", "-serial", "stdio", "-kernel", str(elf)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        found[kernel] = _read_engine_lines(proc)
    return found


def _read_engine_lines(proc: subprocess.Popen) -> dict[str, dict[str, str]]:
    """The "engine-bench model=..." lines of a running engine image until its "done" line."""
    watchdog = threading.Timer(ENGINE_RUN_TIMEOUT_S, proc.kill)  # then the read meets EOF
    watchdog.start()
    rows: dict[str, dict[str, str]] = {}
    try:
        for line in proc.stdout or ():
            if line.startswith("engine-bench done"):
                return rows
            if line.startswith("engine-bench model="):
                fields = dict(part.split("=", 1) for part in line.split()[1:])
                rows[fields["model"]] = fields
        raise SystemExit(f"the engine image stopped early (got {sorted(rows)})")
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()


def print_engine_kernels() -> None:
    runs = engine_kernels()
    print(f"\nFully-connected kernels on the emulated Cortex-M4 (engine test image, invoke only; QEMU -icount "
          f"shift={ICOUNT_SHIFT}: instructions, EMULATED), every test model checked against TFLM's outputs:")
    print(f"  {'model':<14}{'MACs':>9}{'portable insn':>15}{'/MAC':>7}{'DSP insn':>11}{'/MAC':>7}{'speed-up':>10}"
          f"{'bit-exact':>11}")
    for name, dsp in runs["dsp"].items():
        port = runs["portable"][name]
        macs = int(dsp["macs"])
        ins = {k: int(r["ns"]) / (2 ** ICOUNT_SHIFT) / int(r["cases"]) for k, r in (("dsp", dsp), ("portable", port))}
        exact = all(r["load"] == "0" and r["mismatches"] == "0" and int(r["cases"]) > 0 for r in (dsp, port))
        print(f"  {name:<14}{macs:>9,}{ins['portable']:>15,.0f}{ins['portable'] / macs:>7.2f}{ins['dsp']:>11,.0f}"
              f"{ins['dsp'] / macs:>7.2f}{ins['portable'] / ins['dsp']:>9.2f}x"
              f"{'yes' if exact else 'NO':>11}")
    ref_cycles = MLPERF_REF_MS * 1e-3 * MLPERF_REF_MHZ * 1e6
    macs = int(runs["dsp"]["mlperf_ad"]["macs"]) if "mlperf_ad" in runs["dsp"] else 0
    if macs:
        print(f"  MLPerf Tiny v0.5 AD reference (TFLM + CMSIS-NN, real 120 MHz Cortex-M4F, whole inference): "
              f"{MLPERF_REF_MS} ms = {ref_cycles:,.0f} cycles, {ref_cycles / macs:.2f} cycles/MAC "
              f"(cycles on hardware; the rows above count emulated instructions)")


def start_qemu(elf: Path = ELF) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-monitor", "none",
                             "-icount", f"shift={ICOUNT_SHIFT}", "-serial", f"tcp:127.0.0.1:{port},server=on,wait=off",
                             "-kernel", str(elf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


def device_inference(elf: Path) -> list[tuple[str, bytes, int, object]]:
    """(label, image, median inference us, deploy result or None) on the firmware `elf` in QEMU: its
    factory model's BENCHMARK, then each of DEPLOYED pushed over the serial socket and benchmarked."""
    from app.deploy.api import deploy
    from app.services.channel import SerialChannel

    proc, url = start_qemu(elf)
    try:
        ch = SerialChannel.open(url)
        lat = ch.request(m.Benchmark(BENCH_COUNT), timeout=30).msg
        hello = ch.request(m.GetInfo()).msg
        ch.close()
        results: list[tuple[str, bytes, int, object]] = [
            (f"{hello.model_name} v{hello.model_version} (default)", FACTORY.read_bytes(), lat.median_us, None)]
        for name in DEPLOYED:
            image = (DATA / name).read_bytes()
            res = deploy(image, None, via="serial", port=url, bench_count=BENCH_COUNT)[0]
            if not res.ok:
                raise SystemExit(f"deployment of {name} failed: {res.error_message}")
            results.append((f"{res.model_name} v{res.model_version}", image, res.inference_median_us, res))
        return results
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

    print_engine_kernels()

    os.environ["TINYMLOPS_DATA_DIR"] = tempfile.mkdtemp(prefix="tinymlops-bench-")
    results = device_inference(ELF)
    subprocess.run(["make", "-s", "-C", str(PORT_DIR), "ENGINE=portable"], check=True)
    portable = device_inference(PORT_DIR / "build" / "portable" / "tinymlops.elf")

    print(f"\nInference on the emulated Cortex-M4, whole (normalise + quantise + invoke + score; QEMU -icount "
          f"shift={ICOUNT_SHIFT}: 1 instruction = {2 ** ICOUNT_SHIFT} ns, EMULATED), the device's BENCHMARK "
          "median with the DSP kernel and with the portable one, vs the real TFLM on this host:")
    print(f"  {'model':<26}{'image B':>9}{'MACs':>9}{'portable insn':>15}{'emu us':>9}{'instructions':>14}"
          f"{'insn/MAC':>10}{'host TFLM us':>14}{'ratio':>8}")
    for (label, image, median, _res), (_label, _image, port_median, _port) in zip(results, portable, strict=True):
        host = host_tflm_us(image)
        macs = fc_macs(ModelImage.from_bytes(image).tflite)
        print(f"  {label:<26}{len(image):>9}{macs:>9,}{insns(port_median):>15,}{median:>9}{insns(median):>14,}"
              f"{insns(median) / macs:>10.2f}{host:>14.1f}{median / host:>8.1f}")

    print("\nSerial deployments to the emulated device (TCP socket, no baud limit; line-rate floor at "
          f"{BAUD} baud shown as the reference):")
    print(f"  {'model':<22}{'wire B':>9}{'host s':>8}{'device deploy ms':>18}{'load us':>9}"
          f"{'infer us':>9}{'floor s':>9}{'host/floor':>11}")
    for label, _image, _median, res in results[1:]:
        floor = res.wire_bytes / (BAUD / 10)
        print(f"  {label:<22}{res.wire_bytes:>9}{res.host_deploy_s:>8.2f}{res.device_deploy_us / 1000:>18.1f}"
              f"{res.load_us:>9}{res.inference_median_us:>9}{floor:>9.2f}{res.host_deploy_s / floor:>11.2f}")
    print("  (device deploy = XFER_BEGIN received to image verified, device clock; load = parse + plan + "
          "requantisation constants; infer = normalise + quantise + invoke + score)")


if __name__ == "__main__":
    main()
