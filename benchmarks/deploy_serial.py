"""Serial deployment speed against the UART line-rate floor (issue 4, "Done when").

For each baud rate, a virtual device behind a real pty paced like a UART (8N1: 10 bit times per
byte) receives an MLPerf-sized model image (~270 KB int8 dense autoencoder, 36 -> 352 -> 352 -> 8
-> 352 -> 352 -> 36: the MLPerf Tiny anomaly-detection reference is ~270 KB with 640 inputs; the
feature count here is the project's feature spec so the device can load and self-test it).
Prints model bytes, bytes on the wire, the measured host deployment time (first byte sent ->
transfer acknowledged, and -> COMMIT reply), the line-rate floor (wire bytes / (baud / 10)), and
the ratios. Targets: time within 1.10x of the floor, wire bytes within 1.05x of the model.

    python3 -m benchmarks.deploy_serial [--baud 115200 921600] [--image path.tmlm]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from app.ml.conversion import to_int8

# Hidden width giving an int8 image of about the MLPerf Tiny AD reference's 270 KB.
MLPERF_HIDDEN = 352
# Bottleneck width of the MLPerf Tiny AD autoencoder.
MLPERF_BOTTLENECK = 8
# The built image is cached here between runs (conversion + arena search take ~20 s).
CACHE = Path(tempfile.gettempdir()) / "tinymlops-bench-mlperf-sized.tmlm"
# The profile of the virtual device: the MLPerf Tiny reference board (its 512 KB slot fits the image).
PROFILE = "stm32l4r5"
# The device's telemetry tick, as the fleet runs it (telemetry shares the device->host line).
PUMP_PERIOD_S = 0.05
# Inferences the device times after activation (as a deployment from the CLI does).
BENCH_COUNT = 100


def mlperf_sized_image(cache: Path = CACHE) -> bytes:
    """A valid TMLM image of ~270 KB (random weights, real int8 conversion, real TFLM self-test)."""
    if cache.exists():
        return cache.read_bytes()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from app.ml.tflm import build_image

    tf.keras.utils.set_random_seed(270)
    n = 36
    rng = np.random.default_rng(270)
    x = rng.normal(size=(256, n)).astype(np.float32)
    h = MLPERF_HIDDEN
    model = tf.keras.Sequential([tf.keras.Input(shape=(n,))] + [
        tf.keras.layers.Dense(w, activation="relu") for w in (h, h, MLPERF_BOTTLENECK, h, h)
    ] + [tf.keras.layers.Dense(n)])

    tflite = to_int8(model, x[:100])
    image = build_image("mlperf-sized", 7, tflite, np.zeros(n, np.float32), np.ones(n, np.float32), 1.0, x[0])
    data = image.to_bytes()
    cache.write_bytes(data)
    return data


def run_one(image: bytes, baud: int, factory: bytes, profile: str = PROFILE) -> dict:
    """One deployment over a paced pty to a virtual device that keeps sending telemetry."""
    from app.deploy.links import serial_device
    from app.deploy.transfer import PushTransfer
    from app.fleet.device import VirtualDevice
    from app.fleet.serial_device import SerialDevice

    dev = SerialDevice(VirtualDevice("bench-001", "bench/line-1/pump-1", profile, factory, seed=1), baud=baud)
    dev.start()
    stop = threading.Event()

    def pump() -> None:
        while not stop.wait(PUMP_PERIOD_S):
            dev.pump()

    threading.Thread(target=pump, daemon=True).start()
    try:
        with serial_device(dev.slave_path, baud) as link:
            hello = link.hello
            push = PushTransfer(link.channel, image, device_id=hello.device_id, model_name="mlperf-sized",
                                model_version=7, max_chunk=hello.max_chunk, framed=True,
                                line_bytes_per_s=baud / 10, reconnect=link.reconnect)
            stats = push.run(bench_count=BENCH_COUNT)
    finally:
        stop.set()
        dev.stop()
    lat = stats.latency
    return {"baud": baud, "profile": hello.profile, "chunk": stats.chunk_size, "model": len(image),
            "wire": stats.wire_bytes, "transfer_s": stats.transfer_s, "deploy_s": stats.host_deploy_s,
            "floor_s": stats.wire_bytes / (baud / 10), "device_deploy_ms": lat.deploy_us / 1e3 if lat else 0,
            "load_ms": lat.load_us / 1e3 if lat else 0, "retransmits": stats.retransmits}


def pacer_reference(wire_bytes: int, baud: int) -> float:
    """Seconds the emulated UART itself takes to pass `wire_bytes` in the device's read steps, with no
    protocol at all: what the pty emulation costs over the ideal floor (sleep granularity)."""
    from app.fleet.serial_device import PACED_READ, LinePacer

    pacer = LinePacer(baud)
    started = time.perf_counter()
    for _ in range(-(-wire_bytes // PACED_READ)):
        pacer.wait(PACED_READ)
    return time.perf_counter() - started


def factory_image(image: bytes) -> bytes:
    """What the device runs before the deployment: the shipped factory model, else `image` with
    another version number (same weights, so its self-test stays valid)."""
    from app.domain import paths
    from app.protocol.image import ModelImage

    path = paths.resources_dir() / "models" / "factory.tmlm"
    if path.exists():
        return path.read_bytes()
    older = ModelImage.from_bytes(image)
    older.version -= 1
    return older.to_bytes()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baud", type=int, nargs="+", default=[115200, 921600])
    ap.add_argument("--image", type=Path, help="a .tmlm image instead of the MLPerf-sized one")
    args = ap.parse_args(argv)
    image = args.image.read_bytes() if args.image else mlperf_sized_image()
    factory = factory_image(image)
    rows = [run_one(image, b, factory) for b in args.baud]
    for r in rows:
        r["uart_s"] = pacer_reference(r["wire"], r["baud"])
    print(f"model image: {len(image)} bytes ({'given' if args.image else 'MLPerf-sized dense AE, int8'})")
    head = (f"{'baud':>7} {'profile':>16} {'chunk':>5} {'model B':>8} {'wire B':>8} {'wire/model':>10} "
            f"{'floor s':>8} {'xfer s':>7} {'xfer/floor':>10} {'deploy s':>8} {'deploy/floor':>12} "
            f"{'uart-only s':>11} {'deploy/uart':>11} {'dev deploy ms':>13} {'load ms':>7} {'retx':>4}")
    print(head)
    for r in rows:
        print(f"{r['baud']:>7} {r['profile']:>16} {r['chunk']:>5} {r['model']:>8} {r['wire']:>8} "
              f"{r['wire'] / r['model']:>10.4f} {r['floor_s']:>8.2f} {r['transfer_s']:>7.2f} "
              f"{r['transfer_s'] / r['floor_s']:>10.3f} {r['deploy_s']:>8.2f} {r['deploy_s'] / r['floor_s']:>12.3f} "
              f"{r['uart_s']:>11.2f} {r['deploy_s'] / r['uart_s']:>11.3f}"
              f" {r['device_deploy_ms']:>13.1f} {r['load_ms']:>7.2f} {r['retransmits']:>4}")
    print("targets: deploy/floor <= 1.10, wire/model <= 1.05 (floor = wire bytes / (baud / 10), 8N1)")
    print("uart-only: the same wire bytes through the virtual device's UART pacer alone (no protocol),\n"
          "measured now: what the pty emulation itself costs above the floor")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
