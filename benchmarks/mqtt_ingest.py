"""MQTT ingest: telemetry messages/s decoded by the app (MqttConnection + FleetMonitor) vs a bare paho counter.

Starts a Mosquitto on a free loopback port, two subscriber processes (the app's ingest path and a
paho client that only counts), then one publisher process that floods TELEMETRY messages for many
devices. Each subscriber times its own first-to-last message; the table shows both rates and their
ratio. Run: `python3 benchmarks/mqtt_ingest.py [--messages N] [--devices D]`.
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


def _telemetry_payloads(devices: int) -> list[tuple[str, bytes]]:
    from app.protocol import messages as m
    from app.protocol import topics

    out = []
    for d in range(devices):
        tel = m.Telemetry(uptime_ms=1000 * d, window_seq=d, model_version=3, score=0.01 * d, threshold=0.5,
                          flags=0, shaft_hz=24.7, features=tuple(float(i) for i in range(36)))
        out.append((topics.device_topic("bench", f"dev-{d:04d}", topics.TELEMETRY), m.encode(tel, d)))
    return out


def _wait_drain(count: list[int], first: list[float], last: list[float], expected: int) -> None:
    while True:
        time.sleep(0.1)
        if count[0] >= expected:
            return
        if first[0] and time.perf_counter() - last[0] > IDLE_END_S:
            return


def bare_subscriber(url: str, expected: int, ready: mp.Event, result: mp.Queue) -> None:
    import paho.mqtt.client as mqtt

    from app.transport.urls import parse_broker_url

    b = parse_broker_url(url)
    count, first, last = [0], [0.0], [0.0]

    def on_message(client, userdata, msg) -> None:
        now = time.perf_counter()
        if not first[0]:
            first[0] = now
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
    result.put(("bare paho subscriber (counts only)", count[0], last[0] - first[0], count[0]))


def app_subscriber(url: str, expected: int, ready: mp.Event, result: mp.Queue) -> None:
    from app.services.fleet_monitor import FleetMonitor
    from app.transport.mqtt_link import MqttConnection

    count, first, last = [0], [0.0], [0.0]

    conn = MqttConnection(url, client_id="bench-app").connect()
    monitor = FleetMonitor(conn)

    def on_event(event: str, record) -> None:  # a real listener, as the GUI has one
        if event == "telemetry":
            now = time.perf_counter()
            if not first[0]:
                first[0] = now
            count[0] += 1
            last[0] = now

    monitor.add_listener(on_event)
    time.sleep(0.5)  # the subscriptions are sent on the network thread
    ready.set()
    _wait_drain(count, first, last, expected)
    decoded = monitor.counters["telemetry"]
    devices = len(monitor.devices())
    monitor.close()
    conn.close()
    result.put((f"app ingest (FleetMonitor, {devices} devices)", count[0], last[0] - first[0], decoded))


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
    result.put(("publisher", messages, elapsed, messages))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=60000)
    parser.add_argument("--devices", type=int, default=200)
    args = parser.parse_args()

    from tests.fixtures.brokers import MosquittoProcess

    ctx = mp.get_context("spawn")
    with MosquittoProcess() as broker:
        result: mp.Queue = ctx.Queue()
        readies = [ctx.Event(), ctx.Event()]
        subs = [ctx.Process(target=bare_subscriber, args=(broker.url, args.messages, readies[0], result)),
                ctx.Process(target=app_subscriber, args=(broker.url, args.messages, readies[1], result))]
        for p in subs:
            p.start()
        for ev in readies:
            if not ev.wait(READY_TIMEOUT_S):
                raise SystemExit("a subscriber did not get ready")
        pub = ctx.Process(target=publisher, args=(broker.url, args.messages, args.devices, result))
        pub.start()
        rows = {}
        for _ in range(3):
            name, received, elapsed, decoded = result.get(timeout=300)
            rows[name] = (received, elapsed, decoded)
        for p in [*subs, pub]:
            p.join(10)

    print(f"MQTT telemetry ingest: {args.messages} messages ({len(_telemetry_payloads(1)[0][1])} bytes each) "
          f"from {args.devices} devices, local Mosquitto, QoS 0")
    print(f"{'path':48} {'received':>9} {'seconds':>8} {'msg/s':>9}")
    rates = {}
    for name, (received, elapsed, _decoded) in rows.items():
        rate = received / elapsed if elapsed > 0 else float("nan")
        rates[name] = rate
        print(f"{name:48} {received:9d} {elapsed:8.2f} {rate:9.0f}")
    app = next(v for k, v in rates.items() if k.startswith("app"))
    bare = next(v for k, v in rates.items() if k.startswith("bare"))
    print(f"ratio app / bare paho: {app / bare:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
