"""Virtual fleet at plant scale: threads, CPU and telemetry rate for 10, 100 and 1,000 devices.

Starts a Mosquitto on a free loopback port and a bare paho subscriber (counts telemetry and
distinct devices), then, for each size, a fleet in its own process (`VirtualFleet`, one MQTT
connection per device). After a warm-up it measures, over `--seconds`: the fleet process's
threads (/proc/PID/status) and CPU% (/proc/PID/stat user+system), the telemetry messages per second
the subscriber saw against the expected rate (devices / telemetry period, the reference),
and the time until every device was connected (CONNACK; the fleet's own `start()`).

    python3 -m benchmarks.fleet_scale [--devices 10 100 1000] [--seconds 20] [--period 1 5]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Telemetry of a fleet starts within one period of its start (first ticks are spread over it) and
# the first seconds carry the connect storm; the measurement window starts after this.
WARMUP_S = 3.0
# A fleet of 1,000 builds its devices (factory model load + self-test each) in ~5-20 s on a busy machine.
CHILD_READY_TIMEOUT_S = 300.0
# A fleet stops (OFFLINE for every device, DISCONNECT) within this.
CHILD_STOP_TIMEOUT_S = 60.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def child(count: int, url: str, period: float) -> int:
    """Runs in the fleet process: build, connect, report, tick until SIGTERM, stop gracefully."""
    import logging

    from app.fleet.fleet import VirtualFleet

    logging.basicConfig(level=logging.WARNING)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    t0 = time.perf_counter()
    fleet = VirtualFleet(url, count, seed=7, telemetry_period_s=period)
    built = time.perf_counter() - t0
    t1 = time.perf_counter()
    fleet.start(connect_timeout=CHILD_READY_TIMEOUT_S)
    connect_s = time.perf_counter() - t1
    connected = fleet.connected_count
    print(json.dumps({"built_s": built, "connect_s": connect_s, "connected": connected}), flush=True)
    stop.wait()
    fleet.stop()
    return 0


class Counter:
    """A bare paho subscriber: telemetry messages and the devices they came from."""

    def __init__(self, url: str) -> None:
        import paho.mqtt.client as mqtt

        from app.transport.urls import parse_broker_url

        u = parse_broker_url(url)
        self.lock = threading.Lock()
        self.count = 0
        self.devices: set[str] = set()
        ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fleet-scale-counter")
        self.client.on_connect = lambda c, *a: (c.subscribe("tinymlops/v1/+/+/telemetry", qos=0), ready.set())
        self.client.on_message = self._on_message
        self.client.connect(u.host, u.port)
        self.client.loop_start()
        if not ready.wait(10):
            raise RuntimeError("counter did not connect")

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.count += 1
            self.devices.add(msg.topic.split("/")[3])

    def snapshot(self) -> tuple[int, int]:
        with self.lock:
            return self.count, len(self.devices)

    def reset_devices(self) -> None:
        with self.lock:
            self.devices = set()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def measure(count: int, period: float, url: str, counter: Counter, seconds: float) -> dict:
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.fleet_scale", url, "--child", str(count),
                             "--period", str(period)],
                            stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"fleet of {count} exited with {proc.wait()}")
        ready = json.loads(line)
        time.sleep(WARMUP_S)
        counter.reset_devices()
        c0, _ = counter.snapshot()
        cpu0, t0 = _cpu_s(proc.pid), time.monotonic()
        threads = []
        while time.monotonic() - t0 < seconds:
            time.sleep(1.0)
            threads.append(_threads(proc.pid))
        c1, heard = counter.snapshot()
        cpu1, t1 = _cpu_s(proc.pid), time.monotonic()
    finally:
        stopping = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(CHILD_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stop_s = time.monotonic() - stopping
    elapsed = t1 - t0
    cpu_pct = 100.0 * (cpu1 - cpu0) / elapsed
    return {"n": count, "threads": max(threads), "cpu_pct": cpu_pct, "cpu_ms_per_dev_s": 10.0 * cpu_pct / count,
            "rate": (c1 - c0) / elapsed, "expected": count / period, "period": period,
            "stop_s": stop_s, "heard": heard, **ready}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--period", type=float, nargs="+", default=[1.0],
                    help="telemetry periods to run each size with (VirtualFleet telemetry_period_s)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("url", nargs="?", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args.child, args.url, args.period[0])

    from tests.fixtures.brokers import MosquittoProcess

    broker = MosquittoProcess()
    url = broker.start()
    counter = Counter(url)
    try:
        rows = [measure(n, period, url, counter, args.seconds) for period in args.period for n in args.devices]
    finally:
        counter.close()
        broker.close()
    print(f"Mosquitto on loopback; {args.seconds:.0f} s per fleet after {WARMUP_S:.0f} s warm-up; "
          f"expected = devices / telemetry period (reference); {os.cpu_count()} CPUs")
    print(f"{'devices':>7} {'period s':>8} {'connected':>9} {'build s':>7} {'connect s':>9} {'threads':>7} "
          f"{'CPU %':>6} {'CPU ms/dev/s':>12} {'msgs/s':>8} {'expected':>8} {'ratio':>6} {'heard':>6} {'stop s':>6}")
    for r in rows:
        print(f"{r['n']:>7} {r['period']:>8.1f} {r['connected']:>9} {r['built_s']:>7.1f} {r['connect_s']:>9.2f} "
              f"{r['threads']:>7} {r['cpu_pct']:>6.1f} {r['cpu_ms_per_dev_s']:>12.3f} {r['rate']:>8.1f} "
              f"{r['expected']:>8.1f} {r['rate'] / r['expected']:>6.3f} {r['heard']:>6} {r['stop_s']:>6.2f}")
    print("threads: the fleet process's, max over the window; CPU %: of one core, user+system;\n"
          "CPU ms/dev/s: CPU time per device per second of simulation; heard: devices whose telemetry arrived;\n"
          "connect s: fleet.start() until every device had its CONNACK; stop s: SIGTERM until the process\n"
          "exited (every device published OFFLINE and disconnected)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
