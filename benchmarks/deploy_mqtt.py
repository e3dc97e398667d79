"""Fleet rollout over MQTT: deployment time to 1, 10 and 50 virtual devices, and what the
operator's uplink carried (issue 4, "Fleet rollout").

A real Mosquitto on loopback, N virtual devices (one paho client each, as real nodes have), and a
pull rollout (PROTOCOL.md 5.2): the model is published once, retained, to content-addressed chunk
topics, and every device fetches it from the broker. Prints, per N: rollout time, per-device host
deployment time (median / max), bytes the operator published, N x image size, and their ratio
(1/N means "the model once"); a push deployment to one device is measured as the reference.

    python3 -m benchmarks.deploy_mqtt [--devices 1 10 50] [--image path.tmlm]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

# The virtual devices' profile: the MLPerf Tiny reference board (its slot fits the ~290 KB image).
PROFILE = "stm32l4r5"
# The fleet's tick: telemetry and heartbeats keep flowing during the rollout, as on a plant.
PUMP_PERIOD_S = 0.1
# Devices fetching at once (the CLI default).
CONCURRENCY = 8
# Inferences each device times after activation.
BENCH_COUNT = 100
# Waiting for N devices to connect and publish their status.
CONNECT_TIMEOUT_S = 60.0


def run(n: int, broker_url: str, factory: bytes, image: bytes, seed: int) -> dict:
    from app.deploy import links
    from app.deploy.rollout import Rollout, find_devices
    from app.fleet.device import VirtualDevice
    from app.fleet.mqtt_device import MqttDevice

    devices = [MqttDevice(VirtualDevice(f"b{seed}-{i:03d}", "bench/line-1/pump-1", PROFILE, factory, seed=i),
                          broker_url) for i in range(n)]
    stop = threading.Event()

    def pump() -> None:
        while not stop.wait(PUMP_PERIOD_S):
            for d in devices:
                d.pump()

    for d in devices:
        d.start()
    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        for d in devices:
            d.connected.wait(max(0.1, deadline - time.monotonic()))
        with links.broker_connection(broker_url) as conn:
            ids = [d.device.device_id for d in devices]
            hellos = find_devices(conn, ids, timeout=CONNECT_TIMEOUT_S)
            started = time.perf_counter()
            report = Rollout(conn, image, hellos, model_name="mlperf-sized", model_version=8,
                             concurrency=CONCURRENCY, bench_count=BENCH_COUNT).run()
            elapsed = time.perf_counter() - started
    finally:
        stop.set()
        for d in devices:
            d.stop()
    ok = [r for r in report.results if r.ok]
    per_device = [r.stats.host_deploy_s for r in ok]
    return {"n": n, "ok": len(ok), "elapsed": elapsed, "median": statistics.median(per_device) if ok else 0,
            "max": max(per_device) if ok else 0, "published": report.published_bytes,
            "chunks": report.chunk_bytes, "n_image": n * len(image), "chunk": report.chunk_size,
            "errors": sorted({str(r.error) for r in report.results if r.error})[:3]}


def push_reference(broker_url: str, factory: bytes, image: bytes) -> float:
    """Push deployment to one device (chunks on its command topic), for comparison."""
    from app.deploy import api
    from app.deploy.history import DeploymentHistory
    from app.fleet.device import VirtualDevice
    from app.fleet.mqtt_device import MqttDevice

    dev = MqttDevice(VirtualDevice("ref-001", "bench/line-1/pump-1", PROFILE, factory, seed=9), broker_url)
    dev.start()
    dev.connected.wait(CONNECT_TIMEOUT_S)
    try:
        import tempfile

        hist = DeploymentHistory(Path(tempfile.mkdtemp()) / "bench.sqlite3")
        started = time.perf_counter()
        result = api.deploy(image, ["ref-001"], via="mqtt", broker=broker_url, pull=False, history=hist)[0]
        if not result.ok:
            raise RuntimeError(result.error_message)
        return time.perf_counter() - started
    finally:
        dev.stop()


def main(argv: list[str] | None = None) -> int:
    from benchmarks.deploy_serial import factory_image, mlperf_sized_image
    from tests.fixtures.brokers import MosquittoProcess

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--image", type=Path, help="a .tmlm image instead of the MLPerf-sized one")
    args = ap.parse_args(argv)
    image = args.image.read_bytes() if args.image else mlperf_sized_image()
    factory = factory_image(image)
    broker = MosquittoProcess()
    url = broker.start()
    try:
        rows = [run(n, url, factory, image, seed) for seed, n in enumerate(args.devices)]
        ref = push_reference(url, factory, image)  # after the rollouts: the model's load probe is warm for both
    finally:
        broker.stop()
    print(f"image: {len(image)} bytes; broker: Mosquitto on loopback; concurrency {CONCURRENCY}; "
          f"reference push to 1 device: {ref:.2f} s")
    print(f"{'N':>3} {'ok':>3} {'chunk':>5} {'rollout s':>9} {'dev med s':>9} {'dev max s':>9} {'vs push x N':>11} "
          f"{'published B':>11} {'N x image B':>11} {'published/(N x image)':>21}")
    for r in rows:
        print(f"{r['n']:>3} {r['ok']:>3} {r['chunk']:>5} {r['elapsed']:>9.2f} {r['median']:>9.2f} {r['max']:>9.2f} "
              f"{r['elapsed'] / (ref * r['n']):>11.3f} {r['published']:>11} {r['n_image']:>11} "
              f"{r['published'] / r['n_image']:>21.4f}")
        for e in r["errors"]:
            print(f"    error: {e}")
    print("published: every MQTT PUBLISH packet the operator sent (chunks once, commands, clean-up of the\n"
          "retained chunks); 'vs push x N': rollout time / (N sequential push deployments)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
