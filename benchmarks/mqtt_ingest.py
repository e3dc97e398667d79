"""MQTT ingest: telemetry messages/s decoded by the app (MqttConnection + FleetMonitor) vs a bare paho counter.

Starts a Mosquitto on a free loopback port and leaves a retained HELLO for every device on it (the
monitor drops telemetry from ids that never said HELLO), then two subscriber processes (the app's
ingest path and a paho client that only counts), then one publisher process that floods TELEMETRY
messages for those devices. The app path is wired as the GUI session wires it: FleetMonitor with
the telemetry history's listener (writing to a throw-away file) and a counting listener standing
in for the GUI's. Each subscriber times its own first-to-last message; the table shows both rates,
the app's decoded count (every message must be decoded and counted), their ratio, and each one's
process CPU per message (less sensitive to a loaded machine than the rates).
Run: `python3 benchmarks/mqtt_ingest.py [--messages N] [--devices D] [--no-history] [--profile]`.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Each subscriber stops when it has seen this long a silence after its last message.
IDLE_END_S = 2.0
# Subscribers must be subscribed before the flood starts; they report ready, this bounds the wait.
READY_TIMEOUT_S = 20.0
# A subscriber that has received nothing for this long after the flood began gives up (a broken
# ingest path reports 0 messages instead of hanging the benchmark).
NOTHING_TIMEOUT_S = 60.0
# Where --profile writes the app subscriber's cProfile table (top functions by own time).
PROFILE_FILE = "mqtt_ingest_profile.txt"


def _telemetry_payloads(devices: int) -> list[tuple[str, bytes]]:
    from app.protocol import messages as m
    from app.protocol import topics

    out = []
    for d in range(devices):
        tel = m.Telemetry(uptime_ms=1000 * d, window_seq=d, model_version=3, score=0.01 * d, threshold=0.5,
                          flags=0, shaft_hz=24.7, features=tuple(float(i) for i in range(36)))
        out.append((topics.device_topic("bench", f"dev-{d:04d}", topics.TELEMETRY), m.encode(tel, d)))
    return out


def _hellos(devices: int) -> list[tuple[str, bytes]]:
    from app.protocol import messages as m
    from app.protocol import topics

    return [(topics.device_topic("bench", f"dev-{d:04d}", topics.STATUS),
             m.encode(m.Hello(device_id=f"dev-{d:04d}", location="bench/line", model_version=3), d))
            for d in range(devices)]


def _wait_drain(count: list[int], first: list[float], last: list[float], expected: int) -> None:
    started = time.perf_counter()
    while True:
        time.sleep(0.1)
        if count[0] >= expected:
            return
        if first[0] and time.perf_counter() - last[0] > IDLE_END_S:
            return
        if not first[0] and time.perf_counter() - started > NOTHING_TIMEOUT_S:
            return


def bare_subscriber(url: str, expected: int, ready: mp.Event, result: mp.Queue) -> None:
    import paho.mqtt.client as mqtt

    from app.transport.urls import parse_broker_url

    b = parse_broker_url(url)
    count, first, last, cpu0 = [0], [0.0], [0.0], [0.0]

    def on_message(client, userdata, msg) -> None:
        now = time.perf_counter()
        if not first[0]:
            first[0] = now
            cpu0[0] = time.process_time()
        count[0] += 1
        last[0] = now

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-bare")
    client.on_message = on_message
    client.on_connect = lambda c, *a: (c.subscribe("tinymlops/v1/+/+/telemetry", qos=0), ready.set())
    client.connect(b.host, b.port)
    client.loop_start()
    _wait_drain(count, first, last, expected)
    client.disconnect()
    client.loop_stop()
    cpu = time.process_time() - cpu0[0]
    result.put(("bare paho subscriber (counts only)", count[0], last[0] - first[0], count[0], cpu))


def app_subscriber(url: str, expected: int, devices: int, ready: mp.Event, result: mp.Queue,
                   profile: bool = False, with_history: bool = True) -> None:
    import tempfile
    from pathlib import Path

    from app.services.fleet_monitor import FleetMonitor
    from app.services.telemetry_history import TelemetryHistory
    from app.transport.mqtt_link import MqttConnection

    count, first, last, cpu0 = [0], [0.0], [0.0], [0.0]

    workdir = tempfile.TemporaryDirectory(prefix="tinymlops-ingest-")
    history = TelemetryHistory(Path(workdir.name) / "telemetry.sqlite3")
    conn = MqttConnection(url, client_id="bench-app").connect()
    monitor = FleetMonitor(conn)
    if with_history:
        monitor.add_listener(history.listener)

    def on_event(event: str, record) -> None:  # a real listener, as the GUI has one
        if event == "telemetry":
            now = time.perf_counter()
            if not first[0]:
                first[0] = now
                cpu0[0] = time.process_time()
            count[0] += 1
            last[0] = now

    monitor.add_listener(on_event)
    conn.wait_subscribed()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while len(monitor.devices()) < devices and time.monotonic() < deadline:  # the retained HELLOs
        time.sleep(0.05)
    profiler = None
    if profile:  # the app's part of each message: paho's on_message callback, on its network thread
        import cProfile

        profiler = cProfile.Profile()
        on_message = conn._client.on_message
        conn._client.on_message = lambda *a: profiler.runcall(on_message, *a)
    ready.set()
    _wait_drain(count, first, last, expected)
    history.flush()  # what the writer thread still has queued is part of the cost
    cpu = time.process_time() - cpu0[0]
    if profiler is not None:
        import io
        import pstats

        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
        with open(PROFILE_FILE, "w") as f:
            f.write(out.getvalue())
    decoded = monitor.counters["telemetry"]
    known = len(monitor.devices())
    monitor.close()
    conn.close()
    history.close()
    workdir.cleanup()
    what = "FleetMonitor + history" if with_history else "FleetMonitor"
    result.put((f"app ingest ({what}, {known} devices)", count[0], last[0] - first[0], decoded, cpu))


def publisher(url: str, messages: int, devices: int, result: mp.Queue) -> None:
    import paho.mqtt.client as mqtt

    from app.transport.urls import parse_broker_url

    b = parse_broker_url(url)
    payloads = _telemetry_payloads(devices)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-pub")
    client.connect(b.host, b.port)
    client.loop_start()
    t0 = time.perf_counter()
    for i in range(messages):
        topic, payload = payloads[i % devices]
        info = client.publish(topic, payload, qos=0)
        while info.rc == mqtt.MQTT_ERR_AGAIN:  # pragma: no cover - socket buffer full, wait
            time.sleep(0.001)
            info = client.publish(topic, payload, qos=0)
    elapsed = time.perf_counter() - t0
    time.sleep(0.5)
    client.disconnect()
    client.loop_stop()
    result.put(("publisher", messages, elapsed, messages, float("nan")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=60000)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--profile", action="store_true",
                        help=f"profile the app's message callback with cProfile; writes {PROFILE_FILE}")
    parser.add_argument("--no-history", action="store_true", help="leave the telemetry history's listener out")
    args = parser.parse_args()

    from app.transport.mqtt_link import MqttConnection
    from tests.fixtures.brokers import MosquittoProcess

    ctx = mp.get_context("spawn")
    with MosquittoProcess() as broker:
        with MqttConnection(broker.url, client_id="bench-hello") as conn:
            for topic, payload in _hellos(args.devices):
                conn.publish(topic, payload, qos=1, retain=True)
            conn.wait_published()
        result: mp.Queue = ctx.Queue()
        readies = [ctx.Event(), ctx.Event()]
        subs = [ctx.Process(target=bare_subscriber, args=(broker.url, args.messages, readies[0], result)),
                ctx.Process(target=app_subscriber,
                            args=(broker.url, args.messages, args.devices, readies[1], result, args.profile,
                                  not args.no_history))]
        for p in subs:
            p.start()
        for ev in readies:
            if not ev.wait(READY_TIMEOUT_S):
                raise SystemExit("a subscriber did not get ready")
        pub = ctx.Process(target=publisher, args=(broker.url, args.messages, args.devices, result))
        pub.start()
        rows = {}
        for _ in range(3):
            name, *row = result.get(timeout=300)
            rows[name] = row
        for p in [*subs, pub]:
            p.join(10)

    print(f"MQTT telemetry ingest: {args.messages} messages ({len(_telemetry_payloads(1)[0][1])} bytes each) "
          f"from {args.devices} devices, local Mosquitto, QoS 0")
    print(f"{'path':52} {'received':>9} {'decoded':>9} {'seconds':>8} {'msg/s':>9} {'CPU us/msg':>10}")
    rates, cpus = {}, {}
    for name, (received, elapsed, decoded, cpu) in rows.items():
        rate = received / elapsed if elapsed > 0 else float("nan")
        rates[name] = rate
        cpus[name] = cpu / received * 1e6 if received else float("nan")
        print(f"{name:52} {received:9d} {decoded:9d} {elapsed:8.2f} {rate:9.0f} {cpus[name]:10.1f}")
    app = next(k for k in rates if k.startswith("app"))
    bare = next(k for k in rates if k.startswith("bare"))
    print(f"ratio app / bare paho: {rates[app] / rates[bare]:.2f}")
    # the subscribers' own CPU per message (process CPU from their first message to their last
    # committed row): what the wall-clock rates become on an idle machine, less sensitive to load
    print(f"CPU per message, bare paho / app: {cpus[bare] / cpus[app]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
