"""Fit-to-machine check: will this model version false-alarm on that machine's normal running?

A model trained on one machine's normal vibration meets machines that turn at other speeds, carry
other loads and sit on other mountings; their normal windows can score far above the threshold
(issue 14: 9.6 and 30.3 against 2.6 on two healthy machines right after a deployment). Before a
deployment each target's own recent normal windows are scored exactly as the device will score them
(the candidate's int8 model in the real TFLM interpreter, with the image's normalisation:
app.ml.tflm.Scorer), and the fraction above the threshold predicts its false-alarm rate.

Windows come from the telemetry history (app.services.telemetry_history: the feature vectors the
device itself computed in the last `HISTORY_WINDOW_S`), or, when it holds too few, from a short
capture of the device's raw stream (app.ml.recording.StreamRecorder, as `data record` does).
The windows are assumed to be normal running: a machine that is faulty now will look like a misfit.
Qt-free; `FitGate` is the deployment step (app.deploy.api.deploy's `fit_gate`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from app.domain.errors import DataError, LinkError, ModelError
from app.ml import features as feat
from app.ml.intervals import Rate
from app.ml.threshold import lognormal_exceedance
from app.protocol.image import ModelImage

log = logging.getLogger(__name__)

# The telemetry history's windows of the last this many seconds are the machine's "recent normal
# behaviour": long enough for a few hundred windows at one telemetry a second, short enough to be
# the machine as it runs now (today's load, not last week's).
HISTORY_WINDOW_S = 30 * 60.0
# At most this many history windows are scored (the newest): ~10 s of TFLM on a laptop.
MAX_HISTORY_WINDOWS = 2000
# Fewer windows than this cannot tell a fitting model from a marginal one: at 30 windows an observed
# zero still leaves a 95 % upper bound of 11 %.
MIN_FIT_WINDOWS = 30
# Seconds of raw stream captured from a device without enough history: 20 s is 62 windows, enough
# to see a model that alarms on most of them, short enough to wait for before a deployment.
CAPTURE_S = 20.0
# A capture gets this long per second asked plus the grace below (QoS 0 streams on a busy broker).
CAPTURE_TIME_FACTOR = 3.0
CAPTURE_GRACE_S = 15.0
# A device must have been seen on the broker within this long before its capture starts.
DEVICE_SEEN_TIMEOUT_S = 10.0
# How often the capture looks whether a device has shown up yet.
DEVICE_POLL_S = 0.05
# A machine "will false-alarm" when even the low end of its predicted false-alarm rate's 95 %
# interval is above this: 1 % is already ~36 false alarms an hour at one window a second.
FALSE_ALARM_LIMIT = 0.01
# A machine "fits" only when its 99th-percentile score stays under this fraction of the threshold:
# closer, a little drift in speed or load (or a warmer day) pushes it over.
HEADROOM = 0.8
# A device scores one telemetry window a second (PROTOCOL.md 4.2): windows in a machine-day.
WINDOWS_PER_DAY = 86_400
# The product's promise: at most this many false alarms a machine-day. A machine whose scores' fitted
# tail predicts more is not called "fits" even when none of its sampled windows alarms.
MAX_FALSE_ALARMS_PER_DAY = 1.0
# Interpreter arena for scoring: the image's own arena is unknown here and the score does not depend
# on it; TFLM refuses (it does not crash on) an arena too big.
SCORING_ARENA = 1024 * 1024

FITS = "fits"
MARGINAL = "marginal"
WILL_FALSE_ALARM = "will false-alarm"
UNCHECKED = "unchecked"  # no windows could be had (offline device, serial with no history)

ProgressFn = Callable[[str, str], None]  # (device_id, what is happening)


@dataclass
class DeviceFit:
    """The check of one device: windows used, predicted false alarms, score quantiles, verdict."""

    device_id: str
    source: str  # "history", "capture" or "none"
    threshold: float
    windows: int = 0
    false_alarms: Rate = field(default_factory=lambda: Rate(0, 0))
    quantiles: dict[str, float] = field(default_factory=dict)  # p50, p90, p99, max of the scores
    # false alarms a machine-day from a log-normal fit of the scores (None: too few to fit)
    predicted_per_day: float | None = None
    verdict: str = UNCHECKED
    reason: str = ""

    def to_dict(self) -> dict:
        return {"device": self.device_id, "source": self.source, "windows": self.windows,
                "threshold": self.threshold, "false_alarms": self.false_alarms.to_dict(),
                "score_quantiles": self.quantiles, "predicted_false_alarms_per_day": self.predicted_per_day,
                "verdict": self.verdict, "reason": self.reason}

    def line(self) -> str:
        """One line for a terminal: device, verdict, reason."""
        return f"{self.device_id}: {self.verdict} - {self.reason}"


def score_features(image: ModelImage, rows: np.ndarray) -> np.ndarray:
    """Device scores (PROTOCOL.md 6.1) of raw feature rows with the real TFLM interpreter; the
    model is first proven to load in a child process (tflm.probe_load), as every untrusted image."""
    from app.ml import tflm

    rows = np.asarray(rows, np.float32)
    if rows.ndim != 2 or rows.shape[1] != image.n_features:
        raise DataError(f"windows have {rows.shape[-1] if rows.ndim else 0} features; "
                        f"{image.name} expects {image.n_features}")
    if not tflm.probe_load(image.tflite, [SCORING_ARENA])[0]:
        raise ModelError(f"{image.name}@{image.version} does not load in TFLM with {SCORING_ARENA} bytes")
    scorer = tflm.Scorer(image, SCORING_ARENA)
    return np.array([scorer.score(r) for r in rows], np.float32)


def judge(device_id: str, source: str, threshold: float, scores: np.ndarray) -> DeviceFit:
    """Verdict and reason in words from a machine's device scores against `threshold`."""
    scores = np.asarray(scores, np.float64)
    n = len(scores)
    fit = DeviceFit(device_id, source, float(threshold), windows=n)
    if n == 0:
        fit.reason = "no windows of this machine to score (no telemetry history and no capture)"
        return fit
    alarms = int(np.sum(scores > threshold))
    fit.false_alarms = Rate(alarms, n)
    q = {name: float(np.quantile(scores, p)) for name, p in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}
    fit.quantiles = {**q, "max": float(scores.max())}
    exceedance = lognormal_exceedance(scores, threshold)
    fit.predicted_per_day = None if exceedance is None else exceedance * WINDOWS_PER_DAY
    per_day = fit.predicted_per_day
    low, high = fit.false_alarms.interval
    where = f"{n} windows of its {'recent telemetry' if source == 'history' else 'captured stream'}"
    rate = fit.false_alarms.describe()
    if low > FALSE_ALARM_LIMIT:
        fit.verdict = WILL_FALSE_ALARM
        fit.reason = (f"{alarms} of {where} score above the threshold {threshold:.3g} (median "
                      f"{q['p50']:.3g}, {q['p50'] / threshold:.1f}x the threshold): predicted false alarms "
                      f"{rate}. This machine runs differently from the training data; train on its own "
                      "normal data (or with it)")
    elif n < MIN_FIT_WINDOWS:
        fit.verdict = MARGINAL
        fit.reason = (f"only {where} (at least {MIN_FIT_WINDOWS} are needed to judge): false alarms {rate}, "
                      f"99th percentile score {q['p99']:.3g} vs threshold {threshold:.3g}")
    elif alarms == 0 and q["p99"] <= HEADROOM * threshold and per_day is not None \
            and per_day > MAX_FALSE_ALARMS_PER_DAY:
        fit.verdict = MARGINAL
        fit.reason = (f"none of {where} alarms, but the spread of their scores (99th percentile {q['p99']:.3g}, "
                      f"threshold {threshold:.3g}) predicts about {per_day:.3g} false alarms a machine-day, "
                      f"over the {MAX_FALSE_ALARMS_PER_DAY:g} a day this tool aims for")
    elif alarms == 0 and q["p99"] <= HEADROOM * threshold:
        fit.verdict = FITS
        fit.reason = (f"none of {where} alarms: 99th percentile score {q['p99']:.3g} is "
                      f"{q['p99'] / threshold:.0%} of the threshold {threshold:.3g}; false alarms {rate}")
        if per_day is not None:
            fit.reason += f"; their fitted tail predicts {per_day:.2g} false alarms a machine-day"
    else:
        fit.verdict = MARGINAL
        why = (f"{alarms} of {where} already alarm" if alarms else
               f"its 99th percentile score {q['p99']:.3g} is {q['p99'] / threshold:.0%} of the threshold")
        fit.reason = (f"{why} (threshold {threshold:.3g}); predicted false alarms {rate}: a little more "
                      "speed or load drift will raise them")
    if high > FALSE_ALARM_LIMIT and fit.verdict == FITS:
        fit.reason += f" (more windows would narrow the {100 * high:.1f} % upper bound)"
    return fit


def history_windows(device_id: str, n_features: int, *, since_s: float = HISTORY_WINDOW_S,
                    history_path=None) -> np.ndarray:
    """The device's feature vectors from the telemetry history (newest MAX_HISTORY_WINDOWS)."""
    from app.services.telemetry_history import read_features

    got = read_features(history_path, device_id, since_s, limit=MAX_HISTORY_WINDOWS)
    if len(got) == 0 or got.features.shape[1] != n_features:
        return np.zeros((0, n_features), np.float32)
    return got.features


def capture_windows(monitor, device_ids: list[str], seconds: float = CAPTURE_S,
                    progress: ProgressFn | None = None,
                    cancel: threading.Event | None = None) -> dict[str, np.ndarray | Exception]:
    """Feature rows of `seconds` of each device's raw stream, all devices at once through one
    FleetMonitor (its stream leases); per device the rows or the error that stopped its capture."""
    from app.ml.recording import StreamRecorder

    recorders: dict[str, StreamRecorder] = {}
    listeners = {}
    out: dict[str, np.ndarray | Exception] = {}
    deadline = time.monotonic() + DEVICE_SEEN_TIMEOUT_S
    waiter = cancel or threading.Event()
    for device in device_ids:
        while monitor.get(device) is None and time.monotonic() < deadline and not waiter.is_set():
            waiter.wait(DEVICE_POLL_S)  # presence arrives as retained messages right after subscribing
        record = monitor.get(device)
        if record is None or not record.online:
            out[device] = LinkError(f"device {device!r} is not online on the broker")
            continue
        recorder = StreamRecorder(seconds)
        recorders[device] = recorder
        listeners[device] = (lambda rec: lambda _device, msg: rec.feed(msg))(recorder)
        monitor.add_stream_listener(device, listeners[device])
        if progress:
            progress(device, f"capturing {seconds:g} s of its stream")
    try:
        end = time.monotonic() + seconds * CAPTURE_TIME_FACTOR + CAPTURE_GRACE_S
        for recorder in recorders.values():
            while not recorder.done and time.monotonic() < end:
                if cancel is not None and cancel.is_set():
                    raise LinkError("fit check cancelled")
                recorder.wait(min(1.0, max(0.0, end - time.monotonic())))
    finally:
        for device, callback in listeners.items():
            monitor.remove_stream_listener(device, callback)
    for device, recorder in recorders.items():
        try:
            samples = recorder.samples()
        except DataError as exc:
            out[device] = exc
            continue
        if not recorder.done:
            out[device] = LinkError(f"device {device!r} streamed {len(samples) // feat.DEFAULT_SPEC.window} of "
                                    f"{recorder.windows} windows in time ({recorder.gaps} gaps)")
            continue
        out[device] = feat.extract_batch(feat.windows_from_recording(samples, recorder.spec), recorder.spec)
    return out


def check_devices(image: ModelImage, device_ids: list[str], *, monitor=None, capture_s: float = CAPTURE_S,
                  since_s: float = HISTORY_WINDOW_S, history_path=None, progress: ProgressFn | None = None,
                  cancel: threading.Event | None = None) -> list[DeviceFit]:
    """Check `image` against each device's own recent normal windows (history first, else a capture
    through `monitor` when one is given); one DeviceFit per device, in the order given."""
    windows: dict[str, np.ndarray] = {}
    sources: dict[str, str] = {}
    problems: dict[str, str] = {}
    for device in device_ids:
        rows = history_windows(device, image.n_features, since_s=since_s, history_path=history_path)
        if len(rows) >= MIN_FIT_WINDOWS:
            windows[device], sources[device] = rows, "history"
            if progress:
                progress(device, f"{len(rows)} windows from the telemetry history")
    missing = [d for d in device_ids if d not in windows]
    if missing and monitor is not None and capture_s > 0:
        for device, got in capture_windows(monitor, missing, capture_s, progress, cancel).items():
            if isinstance(got, Exception):
                problems[device] = str(got)
            else:
                windows[device], sources[device] = got, "capture"
    reports = []
    for device in device_ids:
        rows = windows.get(device)
        if rows is None:
            fit = judge(device, "none", image.threshold, np.zeros(0))
            if device in problems:
                fit.reason = f"no windows of this machine to score: {problems[device]}"
            elif monitor is None:
                fit.reason = (f"fewer than {MIN_FIT_WINDOWS} windows in its telemetry history and no broker "
                              "to capture from")
        else:
            finite = np.isfinite(rows).all(axis=1)  # a window a sensor glitch made NaN/inf says nothing
            fit = judge(device, sources[device], image.threshold, score_features(image, rows[finite]))
            if not finite.all():
                fit.reason += f" ({int((~finite).sum())} windows with non-finite features left out)"
        log.info("fit check %s@%d on %s: %s", image.name, image.version, device, fit.line())
        reports.append(fit)
    return reports


def check_fleet(image: ModelImage, device_ids: list[str], *, broker: str | None = None, connection=None,
                capture_s: float = CAPTURE_S, history_path=None, progress: ProgressFn | None = None,
                cancel: threading.Event | None = None, seen: dict | None = None) -> list[DeviceFit]:
    """`check_devices`, opening the broker (`connection`, else `broker`, else the running app's
    embedded one) only when some device lacks history and a capture is allowed (`capture_s` > 0).
    `seen`, when given, receives the HELLOs the capture's fleet monitor held (a deployment after
    the check need not look those devices up again)."""
    from app.services.fleet_monitor import FleetMonitor

    need_capture = capture_s > 0 and any(
        len(history_windows(d, image.n_features, history_path=history_path)) < MIN_FIT_WINDOWS for d in device_ids)
    if not need_capture:
        return check_devices(image, device_ids, history_path=history_path, progress=progress, cancel=cancel)
    from app.deploy.links import broker_connection

    with contextlib.ExitStack() as stack:
        conn = connection if connection is not None else stack.enter_context(broker_connection(broker))
        monitor = stack.enter_context(FleetMonitor(conn))
        reports = check_devices(image, device_ids, monitor=monitor, capture_s=capture_s, history_path=history_path,
                                progress=progress, cancel=cancel)
        if seen is not None:
            seen.update(monitor.hellos(device_ids))
        return reports


def format_table(reports: list[DeviceFit]) -> str:
    """Per device: source, windows, false alarms with interval, score quantiles vs threshold, verdict."""
    header = ["device", "source", "windows", "false alarms (95 % CI)", "p50", "p99", "max", "threshold", "verdict"]
    rows = []
    for r in reports:
        q = r.quantiles
        rows.append([r.device_id, r.source, str(r.windows), r.false_alarms.describe() if r.windows else "-",
                     *(f"{q[k]:.3g}" if k in q else "-" for k in ("p50", "p99", "max")), f"{r.threshold:.3g}",
                     r.verdict])
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines += [f"  {r.device_id}: {r.reason}" for r in reports]
    return "\n".join(lines)


@dataclass
class FitGate:
    """The deployment step: check the targets, refuse those that will false-alarm unless `force`.

    Called by app.deploy.api.deploy (its `fit_gate`) with the parsed image (or its bytes), the targets and the open
    broker connection; returns {device: refusal text} for the devices not to deploy to. `reports`
    keeps the last check for the caller to show."""

    force: bool = False
    capture_s: float = CAPTURE_S
    progress: ProgressFn | None = None
    cancel: threading.Event | None = None
    history_path: object = None  # the telemetry history file (default: the data dir's)
    reports: list[DeviceFit] = field(default_factory=list)
    hellos: dict = field(default_factory=dict)  # the HELLOs its capture's fleet monitor held (last check)

    def __call__(self, image: ModelImage | bytes, device_ids: list[str], connection=None) -> dict[str, str]:
        if not isinstance(image, ModelImage):
            image = ModelImage.from_bytes(image)
        self.hellos = {}
        self.reports = check_fleet(image, device_ids, connection=connection,
                                   capture_s=self.capture_s if connection is not None else 0.0,
                                   history_path=self.history_path, progress=self.progress, cancel=self.cancel,
                                   seen=self.hellos)
        return refusals(self.reports, self.force)


def refusals(reports: list[DeviceFit], force: bool = False) -> dict[str, str]:
    """{device: why it is not deployed to} for the devices that will false-alarm (none with `force`)."""
    if force:
        return {}
    return {r.device_id: f"fit check: {r.reason} (--force deploys anyway)"
            for r in reports if r.verdict == WILL_FALSE_ALARM}

