"""Watch devices' live scores after a trial deployment and judge their alarm rate (issue 14 item 4).

A transfer that succeeded says nothing about whether the model fits the machine; its alarms do.
`observe()` counts, per device, the telemetry windows scored by the deployed version and how many
of them alarmed, for `observe_s` seconds of live telemetry (FleetMonitor listener, no polling of
the broker; a little longer when a device has not yet shown enough windows to judge, see
MIN_WINDOWS_GRACE_S). `judge()` applies the rule the fit check and `tinymlops adapt` use: a device fails
when even the LOW end of its alarm rate's Wilson 95 % interval is above the allowed rate (evidence
that the model alarms too often there), or when too few of its windows were seen to judge, or when
it went offline or silent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from app.ml.intervals import Rate

# A device whose telemetry of the new version is silent this long stopped (ten missed 1 Hz
# telemetries; QoS 0 loses single messages, not ten).
STALL_TIMEOUT_S = 10.0
# Fewer observed windows than this say nothing about a rate (and mean telemetry hardly arrived).
MIN_OBSERVED_WINDOWS = 5
# How often the wait wakes to look for a stall or a cancel.
POLL_S = 0.5
# The observation runs on past `observe_s`, by at most this long, while a device that is still
# reporting has shown fewer than MIN_OBSERVED_WINDOWS windows of the new version: its first window
# lands a second or two after activation, and a loaded broker or device delays a few more, which
# should cost a little time rather than the verdict. A device silent for STALL_TIMEOUT_S still ends
# the observation at once (so with an observation shorter than that, a device that never reports
# fails as silent rather than as "too few windows"). Within the trial timeouts' margin
# (adapt.TRIAL_MARGIN_S, staged.TRIAL_MARGIN_S: 120 s).
MIN_WINDOWS_GRACE_S = 30.0

ObserveProgressFn = Callable[[float, str], None]


@dataclass
class DeviceObservation:
    """One device's observed windows of the deployed version."""

    device: str
    scores: list[float] = field(default_factory=list)
    alarms: int = 0
    threshold: float | None = None
    problem: str = ""  # why it cannot be judged (offline, silent, too few windows); "" when it can

    @property
    def rate(self) -> Rate:
        return Rate(self.alarms, len(self.scores))

    def evidence(self) -> dict:
        out: dict = {"windows": len(self.scores), "alarms": self.rate.to_dict(), "threshold": self.threshold}
        if self.scores:
            arr = np.asarray(self.scores)
            out["score_quantiles"] = {"p50": float(np.quantile(arr, 0.5)), "p90": float(np.quantile(arr, 0.9)),
                                      "p99": float(np.quantile(arr, 0.99)), "max": float(arr.max())}
        if self.problem:
            out["problem"] = self.problem
        return out


def observe(monitor, devices: list[str], model_name: str, version: int, observe_s: float, *,
            cancel: threading.Event, progress: ObserveProgressFn | None = None) -> dict[str, DeviceObservation]:
    """Count each device's windows scored by `model_name` v`version` for `observe_s` seconds.

    Ends early when a device goes offline or stays silent for STALL_TIMEOUT_S (its `problem` says
    which; the others keep what they saw) or when `cancel` is set (every device's problem says so);
    runs on by up to MIN_WINDOWS_GRACE_S while a device has fewer than MIN_OBSERVED_WINDOWS windows."""
    seen = {d: DeviceObservation(d) for d in devices}
    changed = threading.Condition()

    def on_event(event: str, record) -> None:
        obs = seen.get(record.device_id)
        if obs is None:
            return
        with changed:
            if (event == "telemetry" and record.model_name == model_name and record.model_version == version
                    and record.score is not None):
                obs.scores.append(float(record.score))
                obs.alarms += bool(record.alarm)
                obs.threshold = float(record.threshold) if record.threshold is not None else obs.threshold
            elif event in ("offline", "removed") and not obs.problem:
                obs.problem = f"went offline during the observation ({len(obs.scores)} windows observed)"
            changed.notify_all()

    monitor.add_listener(on_event)
    t0 = time.monotonic()
    last_change = {d: t0 for d in devices}
    last_count = {d: 0 for d in devices}
    last_total = -1
    end = t0 + observe_s

    def short_of_windows() -> bool:
        return any(not obs.problem and len(obs.scores) < MIN_OBSERVED_WINDOWS for obs in seen.values())

    try:
        with changed:
            while (now := time.monotonic()) < end or (short_of_windows() and now < end + MIN_WINDOWS_GRACE_S):
                if cancel.is_set():
                    for obs in seen.values():
                        obs.problem = obs.problem or "cancelled during the observation"
                    break
                for d, obs in seen.items():
                    if len(obs.scores) != last_count[d]:
                        last_count[d], last_change[d] = len(obs.scores), now
                    elif now - last_change[d] > STALL_TIMEOUT_S and not obs.problem:
                        obs.problem = (f"sent no telemetry of v{version} for {STALL_TIMEOUT_S:g} s "
                                       f"({len(obs.scores)} windows observed)")
                if any(obs.problem for obs in seen.values()):
                    break
                total = sum(last_count.values())
                if progress is not None and total != last_total:
                    last_total = total
                    alarms = sum(o.alarms for o in seen.values())
                    progress(min(1.0, (now - t0) / observe_s), f"{total} windows, {alarms} alarms")
                changed.wait(min(POLL_S, (end if now < end else end + MIN_WINDOWS_GRACE_S) - now))
    finally:
        monitor.remove_listener(on_event)
    elapsed = time.monotonic() - t0
    with changed:
        result = {d: DeviceObservation(d, list(o.scores), o.alarms, o.threshold, o.problem) for d, o in seen.items()}
    for obs in result.values():
        if not obs.problem and len(obs.scores) < MIN_OBSERVED_WINDOWS:
            obs.problem = (f"only {len(obs.scores)} windows of v{version} observed in {elapsed:.0f} s (at least "
                           f"{MIN_OBSERVED_WINDOWS} are needed to judge)")
    return result


def judge(obs: DeviceObservation, max_alarm_rate: float) -> str:
    """"" when the device passes; else why it fails (its problem, or its alarm rate's evidence)."""
    if obs.problem:
        return obs.problem
    low, _high = obs.rate.interval
    if low > max_alarm_rate:
        return (f"alarms {obs.rate.describe()}: even the low end is above the {100 * max_alarm_rate:g} % "
                "allowed")
    return ""
