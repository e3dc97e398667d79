"""A plant-sized virtual fleet on real Mosquitto: presence, a thread count that does not grow with the
fleet, connect queueing, reconnects, and every last will when the fleet process dies."""

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from app.fleet.fleet import VirtualFleet
from app.fleet.mailbox import OrderedPool
from app.protocol import messages as m
from app.protocol import topics
from app.protocol.codes import DeviceState
from app.transport.urls import parse_broker_url

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 30.0  # generous: two cores shared with other test runs
SIM_START_S = 60.0  # a fresh interpreter imports the app and builds 60 devices before they connect
PROC_EXIT_S = 10.0
N = 60


class StatusWatch:
    """A bare paho subscriber on every device's status: the latest HELLO per device id."""

    def __init__(self, url: str) -> None:
        u = parse_broker_url(url)
        self.latest: dict[str, m.Hello] = {}
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.c.on_message = self._on_message
        ready = threading.Event()
        self.c.on_connect = lambda *a: (self.c.subscribe(topics.all_status(), qos=1), ready.set())
        self.c.connect(u.host, u.port)
        self.c.loop_start()
        assert ready.wait(WAIT_S)

    def _on_message(self, client, userdata, msg) -> None:
        hello = m.decode(msg.payload).msg
        with self.lock:
            self.latest[hello.device_id] = hello

    def wait_states(self, ids: set[str], online: bool, timeout: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                ok = {d for d, h in self.latest.items()
                      if d in ids and (h.state != DeviceState.OFFLINE) == online}
            if ok == ids:
                return
            time.sleep(0.1)
        missing = sorted(ids - ok)
        raise AssertionError(f"{len(missing)} devices not {'online' if online else 'offline'}: {missing[:10]}")

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def assert_stream_complete(url: str, site: str, device: str, windows: int = 25) -> None:
    """While the fleet's telemetry flows, one device streams: every window arrives, in order, intact
    (the scheduler publishes while the network thread writes; nothing may be stranded or mangled)."""
    u = parse_broker_url(url)
    got: queue.Queue = queue.Queue()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    ready = threading.Event()
    c.on_connect = lambda *a: (c.subscribe([(topics.device_topic(site, device, topics.STREAM), 0),
                                            (topics.device_topic(site, device, topics.REPLY), 1)]), ready.set())
    c.on_subscribe = lambda *a: c.publish(topics.device_topic(site, device, topics.CMD),
                                          m.encode(m.StreamStart(30), 77), qos=1)
    c.on_message = lambda client, userdata, msg: got.put(m.decode(msg.payload))
    c.connect(u.host, u.port)
    c.loop_start()
    try:
        assert ready.wait(WAIT_S)
        seqs = []
        while len(seqs) < windows:
            packet = got.get(timeout=WAIT_S)
            if isinstance(packet.msg, m.Stream):
                assert packet.msg.samples.shape == (256, 3)
                seqs.append(packet.msg.window_seq)
        assert seqs == list(range(seqs[0], seqs[0] + windows))
    finally:
        c.loop_stop()
        c.disconnect()


def ids(n: int) -> set[str]:
    return {f"sim-{i:03d}" for i in range(1, n + 1)}


def new_fleet_threads(before: set[threading.Thread]) -> list[str]:
    """Names of the fleet's threads (`fleet-*`) started since `before` was taken. Not a difference of
    active_count(): a thread another test left behind that ends meanwhile would change that (seen in
    a random-order run: 6 vs 7)."""
    return sorted(t.name for t in threading.enumerate() if t not in before and t.name.startswith("fleet"))


def fleet_threads(url: str, count: int, **kwargs) -> list[str]:
    """The threads a started fleet of `count` adds to this process (MQTT only, so no pty readers)."""
    before = set(threading.enumerate())
    fleet = VirtualFleet(url, count, seed=5, **kwargs).start()
    try:
        return new_fleet_threads(before)
    finally:
        fleet.stop()


def test_sixty_devices_appear_with_a_thread_count_independent_of_fleet_size(mosquitto_factory):
    url = mosquitto_factory().url
    small = fleet_threads(url, 10)
    # connects queue 8 at a time: the connect-storm limit is exercised, and all still connect
    fleet = VirtualFleet(url, N, seed=5, max_connecting=8)
    before = set(threading.enumerate())
    fleet.start()
    try:
        large = new_fleet_threads(before)
        assert large == small, "threads must not grow with the number of devices"
        assert len(large) <= 8  # scheduler, network, connector, handler workers
        assert fleet.connected_count == N
        watch = StatusWatch(url)  # a late subscriber: presence comes from retained statuses
        try:
            watch.wait_states(ids(N), online=True)
            site = watch.latest["sim-042"].site
        finally:
            watch.close()
        assert_stream_complete(url, site, "sim-042")
    finally:
        fleet.stop()
    watch = StatusWatch(url)
    try:
        watch.wait_states(ids(N), online=False)  # a graceful stop announces OFFLINE itself
    finally:
        watch.close()


def test_devices_reconnect_after_the_broker_restarts(mosquitto_factory, virtual_fleet):
    broker = mosquitto_factory()
    fleet = virtual_fleet(broker.url, 5, seed=6)
    broker.restart()  # no persistence: retained statuses are gone until the devices come back
    watch = StatusWatch(broker.url)
    try:
        watch.wait_states(ids(5), online=True)
        assert fleet.connected_count == 5
    finally:
        watch.close()


def test_killing_the_fleet_process_delivers_every_last_will(mosquitto_factory, tmp_path):
    url = mosquitto_factory().url
    watch = StatusWatch(url)
    log = (tmp_path / "sim.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "app", "sim", "--devices", str(N), "--broker", url],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        try:
            watch.wait_states(ids(N), online=True, timeout=SIM_START_S)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nsim stderr:\n{(tmp_path / 'sim.log').read_text()[-2000:]}") from None
        proc.send_signal(signal.SIGKILL)  # no OFFLINE, no DISCONNECT: only the broker's wills can tell
        proc.wait(PROC_EXIT_S)
        watch.wait_states(ids(N), online=False)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        watch.close()


def test_ordered_pool_keeps_order_per_key_and_a_slow_key_does_not_block_others():
    hold_s = 10.0  # the slow task's longest hold; the test releases it long before
    pool = OrderedPool(2, "test-pool")
    pool.start()
    done: queue.Queue = queue.Queue()
    release = threading.Event()
    try:
        pool.submit("slow", lambda: release.wait(hold_s))
        for i in range(50):
            pool.submit("a", lambda i=i: done.put(("a", i)))
        got = [done.get(timeout=hold_s) for _ in range(50)]
        assert got == [("a", i) for i in range(50)]  # in order, while "slow" holds a worker
        pool.submit("slow", lambda: done.put(("slow", 1)))
        assert done.empty()  # queued behind the running task of its own key
        release.set()
        assert done.get(timeout=hold_s) == ("slow", 1)
    finally:
        release.set()
        pool.stop(hold_s)
