"""A device's score trend and a drift indicator, from the telemetry history (Qt-free).

Why: a machine's "normal" changes (an overhaul, a new load, a new mounting) and its model, whose
threshold was calibrated on the old normal (99.5th percentile of held-out normal scores times a
margin, app.ml.pipeline), starts to alarm on healthy running. The operator should see that before
the alarms are dismissed as noise, and be offered a retrain (`tinymlops adapt`).

The detector (documented in the README, "Drift"): over the last DRIFT_WINDOW_S of the device's
stored telemetry scored by the model it runs NOW (older versions' windows are left out), count the
windows whose score is above that model's threshold (the deployed card's threshold, as the device
reports it). A model calibrated as above should alarm on well under DRIFT_ALARM_LIMIT of normal
windows, so:
  * DRIFT   when the LOW end of the alarm rate's Wilson 95 % interval is above DRIFT_ALARM_LIMIT
            (evidence, not one unlucky window: the same rule as the fit check and the observation
            of a trial, app.deploy.observe);
  * WATCH   when it is not, but the 90th percentile of the scores is above WATCH_FRACTION of the
            threshold (the distribution has moved up towards the threshold);
  * OK      otherwise; UNKNOWN with fewer than MIN_DRIFT_WINDOWS windows.
A drift may also be a developing fault: the indicator says "normal has changed - or a fault", and
the vibration analysis (app.analysis.diagnosis) tells which.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.ml.intervals import Rate

# The window judged: an hour of 1 Hz telemetry (3,600 windows) narrows a 1 % rate to about
# +-0.3 % and still follows a change within the hour.
DRIFT_WINDOW_S = 3600.0
# The alarm rate a well-fitted model stays under on normal running (`adapt`'s and a staged
# rollout's default --max-alarm-rate).
DRIFT_ALARM_LIMIT = 0.01
# Fewer windows than this say nothing about a rate of a few percent.
MIN_DRIFT_WINDOWS = 60
# The scores' 90th percentile above this fraction of the threshold: the distribution has moved.
WATCH_FRACTION = 0.8
# Trend ranges the GUI offers: label -> seconds.
TREND_RANGES = {"Last hour": 3600.0, "Last 24 h": 86400.0, "Last 7 days": 7 * 86400.0,
                "Last 30 days": 30 * 86400.0, "Last year": 365 * 86400.0}

OK, WATCH, DRIFT, UNKNOWN = "ok", "watch", "drift", "unknown"
# The events panel's text for a device entering drift starts with this; activating such an event
# opens the retrain flow (app.ui.events).
DRIFT_EVENT_TEXT = "normal has changed - retrain?"


@dataclass(frozen=True)
class DriftStatus:
    """The indicator for one device, with its evidence."""

    device: str
    state: str
    alarms: Rate
    threshold: float | None
    model_version: int
    p90_ratio: float | None  # 90th-percentile score / threshold
    message: str

    def to_dict(self) -> dict:
        return {"device": self.device, "state": self.state, "alarms": self.alarms.to_dict(),
                "threshold": self.threshold, "model_version": self.model_version, "p90_ratio": self.p90_ratio,
                "message": self.message}


@dataclass(frozen=True)
class Trend:
    """Score roll-ups of a device (bucket start, epoch seconds, oldest first): per hour, then per minute."""

    device: str
    ts: np.ndarray
    mean: np.ndarray  # NaN for minutes without a scored window
    low: np.ndarray
    high: np.ndarray
    alarms: np.ndarray
    windows: np.ndarray

    def __len__(self) -> int:
        return len(self.ts)


def assess(device: str, scores: np.ndarray, versions: np.ndarray, threshold: float | None,
           model_version: int) -> DriftStatus:
    """The indicator from stored scores (and their model versions) against the deployed threshold."""
    scores = np.asarray(scores, dtype=np.float64)
    keep = (np.asarray(versions) == model_version) & np.isfinite(scores)
    mine = scores[keep]
    alarms = Rate(int(np.sum(mine > threshold)) if threshold else 0, len(mine))
    if not threshold or len(mine) < MIN_DRIFT_WINDOWS:
        return DriftStatus(device, UNKNOWN, alarms, threshold, model_version, None,
                           f"{len(mine)} windows of v{model_version} in the last {DRIFT_WINDOW_S / 3600:g} h: "
                           f"too few to judge (at least {MIN_DRIFT_WINDOWS})" if threshold else
                           "no model threshold known")
    p90 = float(np.quantile(mine, 0.9)) / threshold
    low, _ = alarms.interval
    if low > DRIFT_ALARM_LIMIT:
        return DriftStatus(device, DRIFT, alarms, threshold, model_version, p90,
                           f"normal has changed - or a fault: alarms {alarms.describe()} in the last "
                           f"{DRIFT_WINDOW_S / 3600:g} h, above the {100 * DRIFT_ALARM_LIMIT:g} % a fitted model "
                           "stays under. Retrain on today's normal (Adapt…) once a fault is ruled out.")
    if p90 > WATCH_FRACTION:
        return DriftStatus(device, WATCH, alarms, threshold, model_version, p90,
                           f"scores moving up: 90 % of windows below {p90:.2f}x the threshold "
                           f"(alarms {alarms.describe()})")
    return DriftStatus(device, OK, alarms, threshold, model_version, p90,
                       f"fits: alarms {alarms.describe()}, 90 % of scores below {p90:.2f}x the threshold")


def drift_status(device: str, threshold: float | None, model_version: int, history_path: Path | None = None,
                 now: float | None = None) -> DriftStatus:
    """The indicator from the telemetry history file (read-only; any thread or process)."""
    from app.services.telemetry_history import read_scores

    scores, versions = read_scores(history_path, device, DRIFT_WINDOW_S, now=now)
    return assess(device, scores, versions, threshold, model_version)


def trend(device: str, since_s: float, history_path: Path | None = None, now: float | None = None) -> Trend:
    """The device's roll-ups of the last `since_s` seconds: hourly ones where the per-minute ones
    have been folded (older than the minute retention), per-minute ones after."""
    import time

    from app.services.telemetry_history import read_hourly, read_rollups

    now = time.time() if now is None else now
    minutes = read_rollups(history_path, device, since_s, now=now)
    first_minute = minutes[0].minute_ts if minutes else now
    hours = [r for r in read_hourly(history_path, device, since_s, now=now) if r.minute_ts < first_minute]
    rows = hours + minutes

    def col(values) -> np.ndarray:
        return np.array([np.nan if v is None else v for v in values], np.float64)

    return Trend(device, np.array([r.minute_ts for r in rows], np.float64), col(r.score_mean for r in rows),
                 col(r.score_min for r in rows), col(r.score_max for r in rows),
                 np.array([r.alarms for r in rows], np.int64), np.array([r.n for r in rows], np.int64))


def fleet_drift(history_path: Path | None = None, device: str | None = None,
                now: float | None = None) -> list[DriftStatus]:
    """Every device of the telemetry history (or only `device`), each judged against the model its
    newest telemetry reports (version and threshold); sorted by device id. Read-only, any thread."""
    from app.services.telemetry_history import read_current_models

    models = read_current_models(history_path)
    if device is not None:
        models = {device: models.get(device, (0, None))}
    return [drift_status(d, threshold, version, history_path, now=now)
            for d, (version, threshold) in sorted(models.items())]


def drift_event_text(status: DriftStatus) -> str:
    """The one event a device's drift episode raises."""
    return f"{DRIFT_EVENT_TEXT} {status.message}"
