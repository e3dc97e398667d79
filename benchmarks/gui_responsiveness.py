"""GUI responsiveness: event-loop delay, frames drawn and the GUI thread's own CPU time with a
synthetic fleet (1,000 devices by default, `--devices 10000` for the large plant) and 4 live
streams, next to an idle baseline measured in the same run; resident memory during long streaming.

    QT_QPA_PLATFORM=offscreen python3 benchmarks/gui_responsiveness.py [--devices 1000] [--seconds 15]
                                                                      [--minutes 1] [--profile]

One real Mosquitto on a free loopback port. A separate "plant" process (so the GUI process does
not share its interpreter with the devices, as on a real site) publishes a retained HELLO for each
of `--devices` synthetic devices and then one TELEMETRY per device per second (protocol-real
messages, spread evenly over the second), and runs 4 virtual devices that stream real vibration.
The GUI process is the real main window connected to that broker (FleetMonitor -> batched fleet
model -> tree view), plus the live view and a second live view, each showing two streaming devices.

Phases, each `--seconds` long, all in this run:
  idle      the window connected to the broker, no devices, no streams
  loaded    every synthetic device in the fleet view at 1 Hz telemetry + 4 live streams drawn
A probe QTimer (10 ms) measures how late the event loop serves it (median, p99, max); frames are
redraws of the live plots; "GUI CPU" is the CPU time the GUI thread itself used per second of the
phase (time.thread_time: unlike the delays, it does not grow when other processes load the
machine). `--profile` prints where the GUI thread spent the loaded phase (cProfile, top 25 by own
time). Then streaming continues for `--minutes` (default 1, a quick run; the issue's figure is
`--minutes 10`) and the process's RSS is printed after each minute.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

PROBE_INTERVAL_MS = 10
STREAMING_DEVICES = 4
# The GUI must list every device within this long of the plant starting (up to 10,000 retained HELLOs
# on a loaded 2-core machine).
FLEET_FILL_TIMEOUT_S = 120.0
# Plant process start: the 4 virtual devices connect and announce themselves.
PLANT_READY_TIMEOUT_S = 60.0
TELEMETRY_PERIOD_S = 1.0


# ------------------------------------------------------------------ the plant (another process)


def plant(broker_url: str, devices: int, ready, stop) -> None:
    """Synthetic HELLO + 1 Hz TELEMETRY for `devices` devices, and 4 streaming virtual devices."""
    import numpy as np

    from app.fleet.fleet import VirtualFleet
    from app.protocol import messages as m
    from app.protocol import topics
    from app.transport.mqtt_link import MqttConnection

    conn = MqttConnection(broker_url, client_id="bench-plant")
    conn.connect()
    rng = np.random.default_rng(1)
    ids = [f"bench-{i:04d}" for i in range(devices)]
    sites = [f"site-{i % 4}" for i in range(devices)]
    for i, (device_id, site) in enumerate(zip(ids, sites, strict=True)):
        hello = m.Hello(caps=0x3F, state=1, device_id=device_id,
                        location=f"{site}/line-{(i // 4) % 10}/machine-{(i // 40) % 25}", profile="stm32l4r5",
                        firmware="bench-1", model_name="pump-ae", model_version=1, slot_size=512 * 1024,
                        free_slot=512 * 1024, ram_budget=128 * 1024, max_chunk=4096, sample_rate=3200)
        conn.publish(topics.device_topic(site, device_id, topics.STATUS), m.encode(hello, i), qos=1, retain=True)
    conn.wait_published()
    fleet = VirtualFleet(broker_url, STREAMING_DEVICES, seed=3)
    fleet.start()
    ready.set()
    seq = 0
    start = time.monotonic()
    tick = 0
    try:
        while not stop.is_set():
            # one telemetry per device per period, spread evenly: devices/period messages per second
            for i, (device_id, site) in enumerate(zip(ids, sites, strict=True)):
                due = start + tick * TELEMETRY_PERIOD_S + i * TELEMETRY_PERIOD_S / devices
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if stop.is_set():
                    break
                score = float(rng.gamma(2.0, 0.1)) * (8.0 if i % 97 == 0 else 1.0)
                tel = m.Telemetry(uptime_ms=int((time.monotonic() - start) * 1000), window_seq=tick,
                                  model_version=1, score=score, threshold=1.0, flags=1 if score > 1.0 else 0,
                                  shaft_hz=24.7, features=())
                seq = (seq + 1) & 0xFFFF
                conn.publish(topics.device_topic(site, device_id, topics.TELEMETRY), m.encode(tel, seq))
            tick += 1
    finally:
        fleet.stop()
        for device_id, site in zip(ids, sites, strict=True):  # clear the retained statuses
            conn.publish(topics.device_topic(site, device_id, topics.STATUS), b"", qos=1, retain=True)
        conn.wait_published()
        conn.close()


# ------------------------------------------------------------------ measurement (GUI process)


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Probe:
    def __init__(self) -> None:
        from PySide6.QtCore import QTimer

        self.delays: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(PROBE_INTERVAL_MS)
        self.timer.timeout.connect(self._tick)
        self._last = 0.0
        self.cpu_ms_per_s = 0.0  # the GUI thread's CPU time per second of the last run

    def _tick(self) -> None:
        now = time.perf_counter()
        self.delays.append(max(0.0, (now - self._last) * 1000 - PROBE_INTERVAL_MS))
        self._last = now

    def run(self, app, seconds: float) -> list[float]:
        self.delays = []
        self._last = time.perf_counter()
        cpu = time.thread_time()
        self.timer.start()
        pump(app, seconds)
        self.timer.stop()
        self.cpu_ms_per_s = (time.thread_time() - cpu) * 1000 / seconds
        return self.delays


def pump(app, seconds: float) -> None:
    """Run Qt's real event loop for `seconds` (as `app.exec()` would), then return."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(max(1, int(seconds * 1000)), loop.quit)
    loop.exec()


def summary(delays: list[float]) -> tuple[float, float, float]:
    ordered = sorted(delays) or [float("nan")]
    return statistics.median(ordered), ordered[int(0.99 * (len(ordered) - 1))], ordered[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each measured phase")
    parser.add_argument("--minutes", type=float, default=1.0,
                        help="live streaming time for the memory figure (default 1; use 10 for the full check)")
    parser.add_argument("--profile", action="store_true", help="print where the GUI thread spends the loaded phase")
    args = parser.parse_args()

    import tempfile

    os.environ["TINYMLOPS_DATA_DIR"] = data_dir = tempfile.mkdtemp(prefix="tinymlops-bench-gui-")
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    for fmt in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):  # leave the user's layout alone
        QSettings.setPath(fmt, QSettings.Scope.UserScope, os.path.join(data_dir, "settings"))

    from app.services.app_session import SessionConfig
    from app.ui.live_view import LiveView
    from app.ui.main_window import TAB_LIVE, MainWindow
    from app.ui.settings import Settings
    from tests.fixtures.brokers import MosquittoProcess

    app = QApplication(sys.argv[:1])
    broker = MosquittoProcess()
    url = broker.start()
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    proc = None
    window = None
    rows = []
    try:
        window = MainWindow(Settings())
        window.resize(1500, 920)
        window.show()
        window.tabs.setCurrentIndex(TAB_LIVE)
        worker = window.start_session(SessionConfig(broker_url=url))
        while window.session is None:
            if worker.failed:
                raise SystemExit(f"session failed: {worker.failed}")
            pump(app, 0.05)
        second = LiveView()
        second.resize(900, 700)
        second.show()
        probe = Probe()

        idle = probe.run(app, args.seconds)
        rows.append(("idle (connected, no devices)", *summary(idle), 0.0, 0, probe.cpu_ms_per_s))

        # not a daemon: its virtual devices fork TFLM probes, which daemonic processes may not do
        proc = ctx.Process(target=plant, args=(url, args.devices, ready, stop))
        proc.start()
        deadline = time.monotonic() + PLANT_READY_TIMEOUT_S
        while not ready.wait(0.2):
            if not proc.is_alive() or time.monotonic() > deadline:
                raise SystemExit("the plant process did not start")
        total = args.devices + STREAMING_DEVICES
        fill_start = time.monotonic()
        while len(window.fleet_model.device_ids()) < total:
            if time.monotonic() - fill_start > FLEET_FILL_TIMEOUT_S:
                raise SystemExit(f"only {len(window.fleet_model.device_ids())} of {total} devices listed")
            pump(app, 0.05)
        fill_s = time.monotonic() - fill_start
        sims = [f"sim-{i:03d}" for i in range(1, STREAMING_DEVICES + 1)]
        window.live.show_devices(sims[0], sims[1])
        second.set_monitor(window.session.monitor)
        second.show_devices(sims[2], sims[3])
        pump(app, 3.0)  # streams start, first windows arrive
        frames0 = window.live.frames + second.frames
        flushes0 = window.fleet_model.applied
        if args.profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.enable()
        loaded = probe.run(app, args.seconds)
        if args.profile:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        frames = (window.live.frames + second.frames - frames0) / args.seconds
        applied = (window.fleet_model.applied - flushes0) / args.seconds
        rows.append((f"{args.devices} devices @1 Hz + {STREAMING_DEVICES} live streams", *summary(loaded), frames,
                     applied, probe.cpu_ms_per_s))
        streams = {d: window.live.feeds.get(d) or second.feeds.get(d) for d in sims}

        print(f"\nGUI responsiveness ({args.devices} synthetic devices + {STREAMING_DEVICES} streaming virtual "
              f"devices; fleet listed in {fill_s:.1f} s; {os.cpu_count()} CPUs)")
        print(f"{'phase':<44} {'median ms':>9} {'p99 ms':>8} {'max ms':>8} {'frames/s':>9} {'rows/s':>8} "
              f"{'GUI CPU ms/s':>12}")
        for name, med, p99, mx, fps, rps, cpu in rows:
            print(f"{name:<44} {med:>9.2f} {p99:>8.2f} {mx:>8.2f} {fps:>9.1f} {rps:>8.0f} {cpu:>12.0f}")
        base, load = rows[0], rows[1]
        # the idle median is below the timer's resolution (0.0 ms): only p99 and max make a ratio
        print(f"{'ratio loaded / idle':<44} {'-':>9} {load[2] / max(base[2], 1e-3):>8.1f} "
              f"{load[3] / max(base[3], 1e-3):>8.1f}")
        print("stream windows received: " + ", ".join(f"{d} {f.windows} ({f.gaps} gaps)" for d, f in streams.items()
                                                      if f is not None))

        print(f"\nresident memory while streaming for {args.minutes:g} min (every buffer is bounded):")
        print(f"  start        {rss_mb():8.1f} MB")
        minute = 0
        started = time.monotonic()
        while time.monotonic() - started < args.minutes * 60:
            pump(app, min(60.0, args.minutes * 60 - (time.monotonic() - started)))
            minute += 1
            print(f"  after {min(minute, args.minutes):>4g} min {rss_mb():8.1f} MB  "
                  f"(frames drawn {window.live.frames + second.frames})", flush=True)
        second.shutdown()
    finally:
        stop.set()
        if window is not None:
            window.close()
        if proc is not None:
            proc.join(30)
            if proc.is_alive():
                proc.terminate()
        broker.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
