"""Cost of one virtual device's tick, per simulated second, for a healthy machine and each fault.

In-process, no broker: `VirtualDevice.tick` is driven on simulated time, one tick per telemetry
period (as `VirtualFleet` ticks an idle device), and timed piece by piece: the machine signal
(`generate` + `skip`), the window analysis (features + shaft estimate), the TFLM score, and the
rest of the tick (message encoding, status). The reference is the same device with
`full_rate=True` (every sample generated, shaft lines by sin/cos, the spec's reference `extract`
and `estimate_shaft_hz`), measured in the same run, tick for tick interleaved with the fast path so
machine load hits both alike; medians over the ticks. A last row keeps a device streaming, where
both paths generate every sample. The "1,000 dev %core" column is what a fleet of that size costs
in % of one core at 1 Hz (ticks only, no MQTT). Both paths share the TFLM scorer, whose f32 sum is
now one `add.accumulate` (was a Python loop, ~15 us more per score): the score column is no part
of the ratio.

    python3 -m benchmarks.fleet_tick [--seconds 120] [--severity 0.8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from app.fleet import device as device_mod
from app.fleet.device import TELEMETRY_PERIOD_S, VirtualDevice
from app.fleet.fleet import load_factory_image
from app.protocol import messages as m
from app.protocol.codes import FaultMask

# The first ticks build caches (FFT plans, impact batches): not part of the steady state.
WARMUP_TICKS = 5
# Streaming row: the host renews the lease far beyond the run.
STREAM_LEASE_S = 3600
# A streaming device is ticked this often by the fleet (app/fleet/fleet.py TICK_S).
STREAM_TICK_S = 0.05
PARTS = ("signal", "analysis", "score")
MODES = (("healthy", 0), ("imbalance", FaultMask.IMBALANCE), ("misalignment", FaultMask.MISALIGNMENT),
         ("looseness", FaultMask.LOOSENESS), ("bearing outer", FaultMask.BEARING_OUTER),
         ("bearing inner", FaultMask.BEARING_INNER))


class Timers:
    """Seconds per named part, accumulated by wrapped callables during one tick."""

    def __init__(self) -> None:
        self.parts: dict[str, float] = defaultdict(float)

    def wrap(self, part: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.parts[part] += time.perf_counter() - started
        return timed


def instrument(dev: VirtualDevice, timers: Timers) -> None:
    dev.machine.generate = timers.wrap("signal", dev.machine.generate)
    dev.machine.skip = timers.wrap("signal", dev.machine.skip)
    dev._analyzer.analyse = timers.wrap("analysis", dev._analyzer.analyse)
    scorer = dev.active_model.scorer
    scorer.score = timers.wrap("score", scorer.score)


def make_device(image: bytes, mask: int, severity: float, full_rate: bool, seed: int) -> tuple[VirtualDevice, Timers]:
    dev = VirtualDevice("bench-1", "bench/line-1/pump-1", "esp32-wroom-32", image, seed=seed, fault_mask=mask,
                        severity=severity, now=0.0, full_rate=full_rate)
    timers = Timers()
    instrument(dev, timers)
    return dev, timers


def measure(pair: dict[str, tuple[VirtualDevice, Timers]], ticks: int, step: float,
            sink: dict[str, Timers]) -> dict[str, dict[str, list[float]]]:
    """Per path: the list of per-tick seconds for each part and the total."""
    samples: dict[str, dict[str, list[float]]] = {k: defaultdict(list) for k in pair}
    for i in range(WARMUP_TICKS + ticks):
        now = (i + 1) * step
        for key, (dev, timers) in pair.items():
            sink["current"] = timers
            timers.parts.clear()
            started = time.perf_counter()
            dev.tick(now)
            total = time.perf_counter() - started
            if i < WARMUP_TICKS:
                continue
            samples[key]["total"].append(total)
            for part in PARTS:
                samples[key][part].append(timers.parts.get(part, 0.0))
    return samples


def per_second(values: list[float], step: float) -> float:
    """Median tick cost as ms per simulated second."""
    return statistics.median(values) / step * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=120, help="simulated seconds per mode (default 120)")
    parser.add_argument("--severity", type=float, default=0.8, help="fault severity 0..1 (default 0.8)")
    args = parser.parse_args()
    image = load_factory_image()
    # the reference path calls the module-level reference functions: route them through the timers
    sink: dict[str, Timers] = {}
    ref_extract, ref_shaft = device_mod.extract, device_mod.estimate_shaft_hz
    device_mod.extract = lambda *a, **k: sink["current"].wrap("analysis", ref_extract)(*a, **k)
    device_mod.estimate_shaft_hz = lambda *a, **k: sink["current"].wrap("analysis", ref_shaft)(*a, **k)

    rows = []
    for index, (label, mask) in enumerate(MODES):
        pair = {key: make_device(image, mask, args.severity, key == "ref", seed=100 + index)
                for key in ("ref", "new")}
        rows.append((label, measure(pair, args.seconds, TELEMETRY_PERIOD_S, sink), TELEMETRY_PERIOD_S))
    pair = {key: make_device(image, 0, 0.0, key == "ref", seed=99) for key in ("ref", "new")}
    for dev, _ in pair.values():
        dev.handle(m.encode(m.StreamStart(STREAM_LEASE_S), 1), now=0.0)
    rows.append(("healthy, streaming", measure(pair, int(args.seconds / STREAM_TICK_S), STREAM_TICK_S, sink),
                 STREAM_TICK_S))

    print(f"virtual device tick, ms per device-second (median of {args.seconds} ticks at 1 Hz, "
          f"streaming ticked every {STREAM_TICK_S * 1e3:.0f} ms); ref = full_rate=True, same run")
    head = f"{'mode':<20} {'path':<4} {'signal':>7} {'analys':>7} {'score':>6} {'other':>6} {'total':>7}"
    print(f"{head} {'1,000 dev %core':>15} {'ref/new':>8}")
    for label, samples, step in rows:
        totals = {k: per_second(samples[k]["total"], step) for k in ("ref", "new")}
        for key in ("ref", "new"):
            parts = [per_second(samples[key][p], step) for p in PARTS]
            other = max(0.0, totals[key] - sum(parts))
            ratio = f"{totals['ref'] / totals['new']:>8.2f}" if key == "new" else ""
            print(f"{label if key == 'ref' else '':<20} {key:<4} {parts[0]:>7.3f} {parts[1]:>7.3f} {parts[2]:>6.3f} "
                  f"{other:>6.3f} {totals[key]:>7.3f} {totals[key] * 1000 / 10:>15.1f} {ratio}")
    idle = [statistics.mean([per_second(s['ref']['total'], st) / per_second(s['new']['total'], st)])
            for _, s, st in rows[:-1]]
    print(f"idle device tick: {statistics.mean(idle):.2f}x faster on average over the {len(idle)} modes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
