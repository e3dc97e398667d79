"""One-step adapt (issue 14, item 6): fresh normal data -> trained, checked, deployed on trial,
observed, then confirmed or rolled back, in one call.

    from app.deploy.adapt import adapt
    report = adapt("sim-003", seconds=120, observe_s=60, broker="mqtt://host:1883", progress=print)
    print(report.decision, report.to_dict())

Why one call: a machine that runs differently from the one a model was trained on false-alarms
(issue 14); the cure is its own normal data, and a CI/CD job should run the whole loop (record,
train, convert, fit check, signed trial deployment, observation, confirm/rollback) without glue.
Every step is timed and reported with its figures; the decision carries its evidence (alarm count
of the observed windows with its Wilson interval, score quantiles).

Safety: the model goes on trial with a timeout (PROTOCOL.md 5.3), so a device whose operator lost
it (stream stopped, broker gone) returns to its previous confirmed model by itself; when the
observation fails the device is rolled back at once when it still answers. Nothing here raises for
a step that fails after the device was found: the report says which step failed and why
(`decision == "failed"`). Bad arguments and a device that is not on the broker raise before
anything is done (DataError, LinkError).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from app.deploy import api, fit_check, observe
from app.domain.errors import DataError, LinkError, TinyMLOpsError
from app.ml.features import DEFAULT_SPEC

log = logging.getLogger(__name__)

# Defaults of the CLI: two minutes of stream is ~375 windows, a minute of telemetry ~60 scores.
DEFAULT_RECORD_S = 120.0
DEFAULT_OBSERVE_S = 60.0
DEFAULT_MAX_ALARM_RATE = 0.01
# The device must show up on the broker (its retained HELLO) within this long.
DEVICE_SEEN_TIMEOUT_S = 10.0
# A stream (recording) or telemetry (observation) silent this long means the device stopped: ten
# missed 1 Hz telemetries, or ~30 missed stream messages; QoS 0 loses single messages, not ten.
STALL_TIMEOUT_S = 10.0
# A recording may take this factor of its nominal length (lost windows are replaced by later ones).
RECORD_TIME_FACTOR = 3.0
# How often waits wake to look for a stall or a cancel.
POLL_S = 0.5
# The trial's own timeout: the observation plus this much for the deployment's tail, the
# observation's run-on for late windows (observe.MIN_WINDOWS_GRACE_S), CONFIRM and a stall to be
# noticed; after it an unconfirmed device reverts by itself (PROTOCOL.md 5.3).
TRIAL_MARGIN_S = 120
# The decision: roll back when even the low end of the observed alarm rate's Wilson 95 % interval
# is above --max-alarm-rate (evidence that the model alarms too often), as the fit check refuses a
# machine; else confirm. With 15 windows one alarm already rolls back (low end 1.2 %); with 60 it
# takes three. A zero tells little about a rate of 1 % (381 windows would be needed): the report
# gives the upper bound too.
# Fewer observed windows than this say nothing about a rate (app.deploy.observe judges them).
MIN_OBSERVED_WINDOWS = observe.MIN_OBSERVED_WINDOWS
# Seconds of stream the fit check captures when the telemetry history holds too few windows.
CHECK_CAPTURE_S = fit_check.CAPTURE_S
# Telemetry history mode: at most this many of the newest windows are trained on (~3 h at 1 Hz:
# more adds training time, not a better picture of today's normal running).
MAX_HISTORY_WINDOWS = 10_000

CONFIRMED, ROLLED_BACK, REFUSED, FAILED = "confirmed", "rolled-back", "refused", "failed"


@dataclass(frozen=True)
class AdaptProgress:
    """One progress report: `step` (record, train, convert, validate, check, deploy, observe),
    its completed fraction and a sentence."""

    step: str
    fraction: float
    message: str = ""


ProgressFn = Callable[[AdaptProgress], None]


@dataclass
class AdaptStep:
    """One step of the flow: how long it took, its figures, and its error when it failed."""

    name: str
    seconds: float = 0.0
    ok: bool = True
    figures: dict = field(default_factory=dict)
    error: str | None = None


@dataclass
class AdaptReport:
    """Everything one adapt did: steps in order, the decision and its evidence."""

    device: str
    family: str
    model: str | None = None  # the registered version, NAME@VERSION
    decision: str = FAILED
    reason: str = ""
    steps: list[AdaptStep] = field(default_factory=list)
    evidence: dict = field(default_factory=dict)
    total_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.decision == CONFIRMED

    def step(self, name: str) -> AdaptStep | None:
        return next((s for s in self.steps if s.name == name), None)

    def to_dict(self) -> dict:
        return asdict(self)


class _StepFailed(Exception):
    """Internal: a step failed; its AdaptStep already holds the error."""


def default_family(device: str) -> str:
    """The family an adapt of `device` registers into without --name: one family per machine."""
    return f"adapt-{device}"


def adapt(device: str, *, seconds: float | None = None, hours: float | None = None, name: str | None = None,
          observe_s: float = DEFAULT_OBSERVE_S, max_alarm_rate: float = DEFAULT_MAX_ALARM_RATE,
          broker: str | None = None, check_s: float = CHECK_CAPTURE_S, config=None,
          progress: ProgressFn | None = None, cancel: threading.Event | None = None,
          history_path=None, connection=None) -> AdaptReport:
    """Record (`seconds`) or read `hours` of telemetry history, train, check fit, deploy on trial,
    observe `observe_s` seconds of live scores, confirm or roll back; see the module docstring.
    `connection`: an open broker connection to use (the GUI's, with its credentials) instead of
    opening one to `broker`; it is left open."""
    from app.ml.registry import check_name

    family = check_name(name or default_family(device))
    if seconds is not None and hours is not None:
        raise DataError("give --seconds (record now) or --hours (telemetry history), not both")
    if hours is None and seconds is None:
        seconds = DEFAULT_RECORD_S
    if hours is not None and not hours > 0:
        raise DataError("--hours must be more than 0")
    if seconds is not None:
        check_record_length(seconds)
    if not observe_s > 0:
        raise DataError("--observe must be more than 0 seconds")
    if not 0 <= max_alarm_rate < 1:
        raise DataError("--max-alarm-rate must be in [0, 1)")
    if int(observe_s) + TRIAL_MARGIN_S > api.U16_MAX:
        raise DataError(f"--observe must be at most {api.U16_MAX - TRIAL_MARGIN_S} s (the trial timeout is a u16)")
    cancel = cancel or threading.Event()
    report = AdaptReport(device=device, family=family)
    started = time.perf_counter()
    from app.deploy.links import broker_connection
    from app.services.fleet_monitor import FleetMonitor

    opened = contextlib.nullcontext(connection) if connection is not None else broker_connection(broker)
    with opened as conn, FleetMonitor(conn) as monitor:
        wait_online(monitor, device, cancel)
        flow = _Flow(report, device, family, monitor, conn, progress, cancel, history_path)
        try:
            flow.run(seconds, hours, observe_s, max_alarm_rate, check_s, config)
        except _StepFailed:
            report.decision = FAILED
            failed = report.steps[-1]
            report.reason = f"{failed.name} failed: {failed.error}" + flow.aftermath
    report.total_seconds = time.perf_counter() - started
    log.info("adapt %s: %s (%s)", device, report.decision, report.reason)
    return report


def check_record_length(seconds: float) -> None:
    from app.ml.datasets import MAX_SAMPLES
    from app.ml.training import MIN_TRAINING_WINDOWS

    windows = int(np.ceil(seconds * DEFAULT_SPEC.sample_rate / DEFAULT_SPEC.window)) if seconds > 0 else 0
    if windows < MIN_TRAINING_WINDOWS:
        shortest = MIN_TRAINING_WINDOWS * DEFAULT_SPEC.window / DEFAULT_SPEC.sample_rate
        raise DataError(f"--seconds {seconds:g} gives {windows} windows; training needs at least "
                        f"{MIN_TRAINING_WINDOWS} ({shortest:.1f} s)")
    if windows * DEFAULT_SPEC.window > MAX_SAMPLES:
        raise DataError(f"--seconds {seconds:g} is more than one dataset holds "
                        f"({MAX_SAMPLES / DEFAULT_SPEC.sample_rate:.0f} s)")


def wait_online(monitor, device: str, cancel: threading.Event) -> None:
    deadline = time.monotonic() + DEVICE_SEEN_TIMEOUT_S
    while monitor.get(device) is None and time.monotonic() < deadline and not cancel.is_set():
        cancel.wait(fit_check.DEVICE_POLL_S)  # the retained HELLO arrives right after subscribing
    record = monitor.get(device)
    if record is None:
        known = ", ".join(r.device_id for r in monitor.devices()) or "none"
        raise LinkError(f"device {device!r} is not on the broker (devices seen: {known})")
    if not record.online:
        raise LinkError(f"device {device!r} is offline (last seen {time.ctime(record.last_seen)})")


def wait_stream(recorder, device: str, seconds: float, cancel: threading.Event) -> None:
    """Wait for `recorder` to fill; LinkError when the device stops streaming (no message for
    STALL_TIMEOUT_S) or is too slow, DataError when its stream does not fit the feature spec."""
    deadline = time.monotonic() + seconds * RECORD_TIME_FACTOR + STALL_TIMEOUT_S
    last_count, last_change = -1, time.monotonic()
    while not recorder.wait(POLL_S):
        now = time.monotonic()
        if cancel.is_set():
            raise LinkError("cancelled during the recording")
        if recorder.received != last_count:
            last_count, last_change = recorder.received, now
        elif now - last_change > STALL_TIMEOUT_S:
            what = "sent no stream windows" if recorder.received == 0 else "stopped streaming"
            raise LinkError(f"device {device!r} {what} ({len(recorder.samples()) // DEFAULT_SPEC.window} "
                            f"of {recorder.windows} windows recorded; nothing for {STALL_TIMEOUT_S:g} s); "
                            "nothing was trained or deployed")
        if now > deadline:
            raise LinkError(f"device {device!r} delivered {len(recorder.samples()) // DEFAULT_SPEC.window}"
                            f" of {recorder.windows} windows in time ({recorder.gaps} gaps)")
    if recorder.error is not None:
        raise recorder.error


class _Flow:
    """The steps, each timed into the report; a failing step raises _StepFailed."""

    def __init__(self, report: AdaptReport, device: str, family: str, monitor, conn,
                 progress: ProgressFn | None, cancel: threading.Event, history_path) -> None:
        self.report, self.device, self.family = report, device, family
        self.monitor, self.conn, self.cancel, self.history_path = monitor, conn, cancel, history_path
        self._progress = progress
        self.aftermath = ""  # what happened to the device after a failure (rolled back, reverts)

    def progress(self, step: str, fraction: float, message: str = "") -> None:
        if self._progress is not None:
            self._progress(AdaptProgress(step, fraction, message))

    def _timed(self, name: str, work: Callable[[AdaptStep], object]):
        step = AdaptStep(name)
        self.report.steps.append(step)
        t0 = time.perf_counter()
        try:
            if self.cancel.is_set():
                raise LinkError("cancelled")
            return work(step)
        except TinyMLOpsError as exc:
            step.ok, step.error = False, str(exc)
            log.warning("adapt %s: %s failed: %s", self.device, name, exc)
            raise _StepFailed from exc
        finally:
            step.seconds = round(time.perf_counter() - t0, 3)

    def run(self, seconds, hours, observe_s, max_alarm_rate, check_s, config) -> None:
        from app.ml import training

        config = config or training.TrainConfig()
        if hours is not None:
            rows = self._timed("history", lambda s: self._history(s, hours))
            mv = self._train_rows(rows, hours, config)
        else:
            ds_id = self._timed("record", lambda s: self._record(s, seconds))
            mv = self._train_dataset(ds_id, config)
        self.report.model = mv.ref
        fit = self._timed("check", lambda s: self._check(s, mv, check_s))
        if fit.verdict == fit_check.WILL_FALSE_ALARM:
            self.report.decision = REFUSED
            self.report.reason = f"fit check on {self.device}: {fit.reason}; not deployed"
            return
        self._timed("deploy", lambda s: self._deploy(s, mv.ref, observe_s))
        self._timed("observe", lambda s: self._observe(s, mv.name, mv.version, observe_s))
        self._timed("decide", lambda s: self._decide(s, max_alarm_rate))

    # ------------------------------------------------------------------ data

    def _record(self, step: AdaptStep, seconds: float) -> str:
        from app.ml.datasets import DatasetStore
        from app.ml.recording import StreamRecorder

        recorder = StreamRecorder(seconds, progress=lambda _s, f, msg: self.progress("record", f, msg))

        def on_stream(_device: str, msg) -> None:
            recorder.feed(msg)

        self.monitor.add_stream_listener(self.device, on_stream)
        try:
            wait_stream(recorder, self.device, seconds, self.cancel)
        finally:
            self.monitor.remove_stream_listener(self.device, on_stream)
        samples = recorder.samples()
        rec = self.monitor.get(self.device)
        meta = {"device": self.device, "profile": rec.profile, "firmware": rec.firmware,
                "model": f"{rec.model_name}@{rec.model_version}", "shaft_hz": rec.shaft_hz,
                "stream_gaps": recorder.gaps, "transport": "mqtt", "recorded_by": "adapt"}
        with DatasetStore() as store:
            ds = store.add(samples, DEFAULT_SPEC.sample_rate, "normal", source=f"device:{self.device}", meta=meta)
        step.figures = {"dataset": ds.id, "windows": ds.windows, "seconds_of_signal": ds.n_samples / ds.sample_rate,
                        "stream_gaps": recorder.gaps, "shaft_hz": rec.shaft_hz}
        return ds.id

    def _history(self, step: AdaptStep, hours: float) -> np.ndarray:
        from app.ml.training import MIN_TRAINING_WINDOWS
        from app.services.telemetry_history import read_features

        got = read_features(self.history_path, self.device, hours * 3600.0, limit=MAX_HISTORY_WINDOWS)
        rows = got.features[np.isfinite(got.features).all(axis=1)] if len(got) else got.features
        if len(rows) < MIN_TRAINING_WINDOWS:
            raise DataError(f"the telemetry history holds {len(rows)} usable windows of {self.device} in the last "
                            f"{hours:g} h; training needs at least {MIN_TRAINING_WINDOWS}: record instead "
                            "(--seconds) or let the history fill")
        if rows.shape[1] != DEFAULT_SPEC.n_features:
            raise DataError(f"the history's windows of {self.device} have {rows.shape[1]} features, the feature "
                            f"spec {DEFAULT_SPEC.n_features}: record instead (--seconds)")
        step.figures = {"windows": len(rows), "hours": hours, "left_out_non_finite": int(len(got) - len(rows))}
        return rows

    # ------------------------------------------------------------------ train

    def _stage_timer(self):
        """progress(stage, fraction, message) that also times the pipeline's stages (train,
        convert, validate) by when each first reports."""
        firsts: dict[str, float] = {}

        def on_progress(stage: str, fraction: float, message: str = "") -> None:
            firsts.setdefault(stage, time.perf_counter())
            self.progress(stage, fraction, message)
        return firsts, on_progress

    def _split_training_step(self, t0: float, firsts: dict[str, float]) -> None:
        """Replace the one "train" step by train / convert / validate steps with their own times."""
        step = self.report.steps[-1]
        end = t0 + step.seconds
        marks = sorted(((t, s) for s, t in firsts.items() if s in ("convert", "validate")))
        if not marks:
            return
        bounds = [t0, *(t for t, _ in marks), end]
        names = ["train", *(s for _, s in marks)]
        self.report.steps[-1:] = [AdaptStep(n, round(b - a, 3), True, step.figures if n == "train" else {})
                                  for n, a, b in zip(names, bounds[:-1], bounds[1:], strict=True)]

    def _train_dataset(self, ds_id: str, config):
        from app.ml import workflows

        firsts, on_progress = self._stage_timer()
        t0 = time.perf_counter()
        mv = self._timed("train", lambda s: self._registered(s, workflows.train_and_register(
            [ds_id], None, self.family, config=config, notes=f"tinymlops adapt --device {self.device}",
            progress=on_progress, cancel=self.cancel)))
        self._split_training_step(t0, firsts)
        return mv

    def _train_rows(self, rows: np.ndarray, hours: float, config):
        from app.ml import pipeline
        from app.ml.registry import Registry

        firsts, on_progress = self._stage_timer()
        t0 = time.perf_counter()

        def work(step: AdaptStep):
            trained = pipeline.train_model(rows, name=self.family, config=config, progress=on_progress,
                                           cancel=self.cancel, provenance={
                                               "devices": [self.device],
                                               "telemetry_history": {"device": self.device, "hours": hours,
                                                                     "windows": len(rows)}})
            with Registry() as reg:
                latest = reg.list(self.family)
                return self._registered(step, reg.add(
                    name=self.family, tflite=trained.tflite, card=trained.card, image=trained.image,
                    parent=latest[-1].ref if latest else None, notes=f"tinymlops adapt --device {self.device} "
                    f"--hours {hours:g}", artifacts=trained.extra_artifacts))
        mv = self._timed("train", work)
        self._split_training_step(t0, firsts)
        return mv

    @staticmethod
    def _registered(step: AdaptStep, mv):
        step.figures = {"model": mv.ref, "threshold": mv.threshold, "image_size": mv.image_size, "arena": mv.arena}
        return mv

    # ------------------------------------------------------------------ check, deploy, observe

    def _check(self, step: AdaptStep, mv, check_s: float):
        from app.ml.registry import Registry
        from app.protocol.image import ModelImage

        with Registry() as reg:
            image = ModelImage.from_bytes(reg.image_bytes(reg.resolve(mv.ref)))
        self.progress("check", 0.0, f"fit check of {mv.ref} on {self.device}")
        [fit] = fit_check.check_devices(image, [self.device], monitor=self.monitor, capture_s=check_s,
                                        history_path=self.history_path, cancel=self.cancel,
                                        progress=lambda _d, text: self.progress("check", 0.0, text))
        self.progress("check", 1.0, fit.verdict)
        step.figures = fit.to_dict()
        if fit.verdict == fit_check.UNCHECKED:
            raise LinkError(f"the fit check got no windows of {self.device}: {fit.reason}")
        return fit

    def _deploy(self, step: AdaptStep, ref: str, observe_s: float) -> None:
        self.trial_timeout_s = int(observe_s) + TRIAL_MARGIN_S
        self.progress("deploy", 0.0, f"{ref} to {self.device} on trial ({self.trial_timeout_s} s timeout)")
        [result] = api.deploy(ref, [self.device], connection=self.conn, trial=True,
                              trial_timeout_s=self.trial_timeout_s,
                              progress=lambda _d, done, total: self.progress("deploy", done / max(total, 1)))
        step.figures = {k: v for k, v in result.to_dict().items() if v not in (None, [], 0, "")}
        if not result.ok:
            self.aftermath = (f"; had the device activated it, it returns to its previous model when its trial "
                              f"times out ({self.trial_timeout_s} s)")
            raise LinkError(f"deployment {result.outcome}: {result.error_message}")
        self.progress("deploy", 1.0, f"on trial, timeout {self.trial_timeout_s} s")

    def _observe(self, step: AdaptStep, name: str, version: int, observe_s: float) -> None:
        """Watch the device's live scores of the new version (app.deploy.observe); a device that goes
        offline or silent, or gives too few windows, fails the step and is rolled back."""
        seen = observe.observe(self.monitor, [self.device], name, version, observe_s, cancel=self.cancel,
                               progress=lambda f, text: self.progress("observe", f, text))
        self.observed = seen[self.device]
        step.figures = self.observed.evidence()
        if self.observed.problem:
            self._undo()
            raise LinkError(f"{self.device}: {self.observed.problem}")
        self.progress("observe", 1.0, f"{len(self.observed.scores)} windows, {self.observed.alarms} alarms")

    def _decide(self, step: AdaptStep, max_alarm_rate: float) -> None:
        evidence = self.observed.evidence()
        rate = self.observed.rate
        evidence["max_alarm_rate"] = max_alarm_rate
        self.report.evidence = evidence
        low, high = rate.interval
        # said only when CONFIRM/ROLLBACK cannot reach the device (the report's reason on failure)
        self.aftermath = (f"; the device returns to its previous model when its trial times out "
                          f"({self.trial_timeout_s} s after the deployment) unless confirmed")
        if low <= max_alarm_rate:  # no evidence the rate is above the limit (the fit check's rule)
            result = api.confirm(self.device, connection=self.conn)
            step.figures = result.to_dict()
            if not result.ok:
                raise LinkError(f"CONFIRM refused: {result.error_message}")
            self.report.decision = CONFIRMED
            self.report.reason = (f"alarms {rate.describe()}: the low end is not above the "
                                  f"{100 * max_alarm_rate:g} % allowed: confirmed"
                                  + (f" (the {100 * high:.1f} % upper bound needs a longer observation to "
                                     "narrow)" if high > max_alarm_rate else ""))
        else:
            result = api.rollback(self.device, connection=self.conn)
            step.figures = result.to_dict()
            if not result.ok:
                raise LinkError(f"ROLLBACK refused: {result.error_message}; the device reverts when its trial "
                                f"times out ({self.trial_timeout_s} s)")
            self.report.decision = ROLLED_BACK
            self.report.reason = (f"alarms {rate.describe()}: even the low end is above the "
                                  f"{100 * max_alarm_rate:g} % allowed: rolled back to "
                                  f"{result.model_name}@{result.model_version}")

    def _undo(self) -> None:
        """After a failed observation: roll back now when the device answers, else say when it
        reverts by itself (its trial timeout)."""
        try:
            result = api.rollback(self.device, connection=self.conn)
        except TinyMLOpsError as exc:
            self.aftermath = (f"; rollback not possible now ({exc}): the device returns to its previous model "
                              f"when its trial times out ({self.trial_timeout_s} s after the deployment)")
            return
        if result.ok:
            self.aftermath = f"; rolled back to {result.model_name}@{result.model_version}"
        else:
            self.aftermath = (f"; rollback refused ({result.error_message}): the trial times out after "
                              f"{self.trial_timeout_s} s")
