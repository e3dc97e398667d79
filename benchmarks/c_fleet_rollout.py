"""Rollout to C devices (issue 16.1, "a benchmark row: 50 C devices in one rollout").

A real Mosquitto on loopback; N devices of the firmware's C core (POSIX port processes,
firmware/ports/posix) and, as the reference measured in the same run, N Python virtual devices;
one `api.deploy` of the factory model restamped as version 2 to all of them. Both are pushed
(`pull=False`) so the rows compare with the figures measured before the port pulled; `--pull`
pulls both (the C devices advertise PULL_XFER on MQTT). Prints, per engine: time to be on line,
rollout time, devices ok, median and max host deployment latency.

Build the port without sanitizers for figures (the host test build has ASan on):

    cmake -S firmware -B /tmp/tm-nosan -DTM_SANITIZE=OFF -DTM_FUZZ=OFF
    cmake --build /tmp/tm-nosan --target tinymlops-device
    TINYMLOPS_C_DEVICE=/tmp/tm-nosan/ports/posix/tinymlops-device python3 -m benchmarks.c_fleet_rollout [--devices 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

# The C engine's reference board: both engines get the same slot and arena.
PROFILE = "stm32l4r5"
# Inferences each device times after activation (a few: the rollout is what is measured).
BENCH_COUNT = 10


def _image() -> bytes:
    from app.fleet.fleet import factory_model_path
    from app.protocol.image import ModelImage

    img = ModelImage.from_bytes(factory_model_path().read_bytes())
    img.version = 2  # another SHA-256 than the factory image the devices run, same valid self-test
    return img.to_bytes()


def _rollout(url: str, ids: list[str], image: bytes, pull: bool) -> dict:
    from app.deploy import api

    started = time.monotonic()
    results = api.deploy(image, ids, via="mqtt", broker=url, bench_count=BENCH_COUNT, pull=pull, fit_gate=None)
    took = time.monotonic() - started
    ok = [r for r in results if r.outcome == "ok"]
    lat = [r.host_deploy_s for r in ok]
    return {"rollout_s": took, "ok": len(ok), "median_s": statistics.median(lat) if lat else float("nan"),
            "max_s": max(lat) if lat else float("nan"), "transports": sorted({r.transport for r in results})}


def run_c(url: str, n: int, image: bytes, pull: bool) -> dict:
    from app.fleet.c_device import CDeviceFleet

    started = time.monotonic()
    with CDeviceFleet(url, n) as fleet:
        online = time.monotonic() - started
        return {"online_s": online, **_rollout(url, [d.device_id for d in fleet.devices], image, pull)}


def run_python(url: str, n: int, image: bytes, pull: bool) -> dict:
    from app.fleet.fleet import VirtualFleet

    started = time.monotonic()
    fleet = VirtualFleet(url, n, profiles=[PROFILE]).start()
    try:
        online = time.monotonic() - started
        return {"online_s": online, **_rollout(url, [d.device_id for d in fleet.devices], image, pull)}
    finally:
        fleet.stop()


def main() -> None:
    from tests.fixtures.brokers import MosquittoProcess

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--pull", action="store_true",
                        help="pull both fleets from the site's retained chunks (PROTOCOL.md 5.2) instead of pushing")
    args = parser.parse_args()
    os.environ.setdefault("TINYMLOPS_DATA_DIR", tempfile.mkdtemp(prefix="tm-bench-"))  # history off the user's
    image = _image()
    rows = []
    for engine, run in (("c (POSIX port)", run_c), ("python (reference)", run_python)):
        with MosquittoProcess() as broker:
            rows.append((engine, run(broker.url, args.devices, image, args.pull)))
    way = "pulled" if args.pull else "pushed"
    print(f"rollout of {len(image)} B to {args.devices} devices, {way}, on Mosquitto (loadavg "
          f"{os.getloadavg()[0]:.1f}); C binary {os.environ.get('TINYMLOPS_C_DEVICE') or 'firmware/build-host'}")
    print(f"{'engine':<20} {'on line s':>9} {'rollout s':>9} {'ok':>7} {'median s':>9} {'max s':>7}  transport")
    for engine, r in rows:
        print(f"{engine:<20} {r['online_s']:>9.1f} {r['rollout_s']:>9.1f} {r['ok']:>3}/{args.devices:<3} "
              f"{r['median_s']:>9.2f} {r['max_s']:>7.2f}  {','.join(r['transports'])}")


if __name__ == "__main__":
    main()
