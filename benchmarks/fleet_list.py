"""`tinymlops fleet list` with 8 virtual devices: how long it waits for the broker's statuses.

Starts a Mosquitto on a free loopback port (and, with --rabbitmq, a private RabbitMQ node) and a
virtual fleet, then runs `fleet list --json` several times in a fresh data directory and prints the
`waited_s` it reports (probe and marker; on RabbitMQ also one telemetry period and GET_INFO answers),
the probe's own time and the command's wall time, against the reference: the fixed 3 s the command
slept before (issue 17.3).

    python3 -m benchmarks.fleet_list [--devices 8] [--runs 5] [--rabbitmq]
    python3 -m benchmarks.fleet_list --retained 10000   # 10,000 retained statuses, no live devices
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# What `fleet list` slept before it knew when the broker had sent its statuses: the reference.
OLD_FIXED_WAIT_S = 3.0
# Virtual devices connect (CONNACK, retained HELLO) within this on a loaded machine.
CONNECT_TIMEOUT_S = 60.0


def measure(url: str, devices: int, runs: int) -> list[tuple[int, float, float, float]]:
    from app.fleet.fleet import VirtualFleet

    fleet = VirtualFleet(url, devices).start()
    try:
        for dev in fleet.devices:
            fleet.mqtt_adapter(dev.device_id).connected.wait(CONNECT_TIMEOUT_S)
        return _run_fleet_list(url, runs)
    finally:
        fleet.stop()


def measure_retained(url: str, statuses: int, runs: int) -> list[tuple[int, float, float, float]]:
    """`fleet list` on a broker holding `statuses` retained HELLOs (a plant's fleet, as the broker keeps
    it), published by one client: the issue's "< 2 s with 10,000 retained statuses"."""
    from app.protocol import messages as m
    from app.protocol import topics
    from app.transport.mqtt_link import MqttConnection

    with MqttConnection(url, client_id="bench-retained") as conn:
        for d in range(statuses):
            hello = m.Hello(device_id=f"dev-{d:05d}", location=f"bench/line-{d % 50}/m-{d}", model_version=3)
            conn.publish(topics.device_topic("bench", hello.device_id, topics.STATUS), m.encode(hello, d % 65536),
                         qos=1, retain=True)
        conn.wait_published()
    return _run_fleet_list(url, runs)


def _run_fleet_list(url: str, runs: int) -> list[tuple[int, float, float, float]]:
    """`fleet list --json` `runs` times in one fresh data directory: (devices, waited_s, probe_s, wall s)."""
    data = tempfile.mkdtemp(prefix="tinymlops-bench-")
    rows = []
    for _ in range(runs):
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "app", "fleet", "list", "--json", "--broker", url],
                                capture_output=True, text=True, check=True,
                                env={**os.environ, "TINYMLOPS_DATA_DIR": data})
        wall = time.monotonic() - started
        out = json.loads(result.stdout)
        rows.append((len(out["devices"]), out["waited_s"], out["broker_capabilities"]["probe_s"], wall))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rabbitmq", action="store_true", help="also on a private RabbitMQ node")
    parser.add_argument("--retained", type=int, metavar="N",
                        help="instead of live devices: N retained statuses on the Mosquitto")
    args = parser.parse_args()
    from tests.fixtures.brokers import MosquittoProcess

    results = {}
    with MosquittoProcess() as broker:
        if args.retained:
            results["mosquitto"] = measure_retained(broker.url, args.retained, args.runs)
        else:
            results["mosquitto"] = measure(broker.url, args.devices, args.runs)
    if args.rabbitmq:
        from tests.fixtures.rabbitmq import RabbitMQCluster

        with RabbitMQCluster(1) as cluster:
            results["rabbitmq"] = measure(cluster.urls[0], args.devices, args.runs)
    print(f"{'broker':10} {'devices':>7} {'waited_s median (max)':>22} {'probe_s':>8} {'wall_s':>7} "
          f"{'reference':>10}")
    for name, rows in results.items():
        waited = [r[1] for r in rows]
        print(f"{name:10} {min(r[0] for r in rows):>7} {statistics.median(waited):>14.3f} ({max(waited):.3f})"
              f" {statistics.median(r[2] for r in rows):>8.3f} {statistics.median(r[3] for r in rows):>7.2f}"
              f" {OLD_FIXED_WAIT_S:>9.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
