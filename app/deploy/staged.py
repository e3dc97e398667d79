"""Staged rollout with behavioural observation (issue 14 item 4).

    from app.deploy.staged import staged_deploy
    report = staged_deploy("pump-1@3", devices, "1,10%,100%", observe_s=300, max_alarm_rate=0.01,
                           broker="mqtt://host:1883", progress=print)
    print(report.state, report.where)

Why: a transfer that succeeds tells nothing about whether the model fits the machines (issue 14's
"Why": two of three healthy machines alarmed right after a clean push). Condition-monitoring
practice is a canary, then growing stages, each watched for alarms with a rollback ready. Each
stage here deploys its devices ON TRIAL (PROTOCOL.md 5.3: an unconfirmed device reverts by itself
at its trial timeout), observes their live scores for `observe_s`, and then either CONFIRMS the
stage and goes on, or ROLLS THAT STAGE BACK and stops the rollout. Earlier stages stay confirmed
(they passed their own observation).

Stages: "N" is a cumulative device count, "N%" a cumulative share of the targets (rounded up), so
"1,10%,100%" is one canary device, then up to a tenth of the fleet, then the rest. A stage that
adds no device (10 % of 5 devices is the canary already) is recorded as skipped.

Decision per stage (app.deploy.observe.judge, the fit check's and `adapt`'s rule): the stage fails
when any of its devices shows an alarm rate whose Wilson 95 % interval's LOW end is above
`max_alarm_rate`, or cannot be judged (offline, silent, fewer than MIN_OBSERVED_WINDOWS windows).
The evidence (per device windows, alarm Rate with its interval, score quantiles) is stored with the
decision.

Restart: every transition is committed (app.deploy.staged_store) before the action it announces.
`resume(id)` takes over a rollout whose process died: a stage that was deciding finishes that
decision (confirm or roll back its devices still on trial); a stage that was deploying or observing
is rolled back on the devices that run the version on trial and then run again from its start
(its observation was lost with the process); then the remaining stages run. Nothing is left
half-confirmed. `StagedStore().list()` reports where every rollout is or stopped.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.deploy import api, observe
from app.deploy.staged_store import (
    CANCELLED,
    COMPLETED,
    CONFIRMED,
    CONFIRMING,
    DEPLOYING,
    OBSERVING,
    PENDING,
    ROLLED_BACK,
    ROLLING_BACK,
    RUNNING,
    SKIPPED,
    STOPPED,
    RolloutRecord,
    StagedStore,
    StageRecord,
)
from app.domain.errors import DataError, LinkError, TinyMLOpsError
from app.ml.intervals import Rate

log = logging.getLogger(__name__)

# Defaults of the CLI: five minutes of telemetry is ~300 windows a device; 1 % as `adapt`.
DEFAULT_OBSERVE_S = 300.0
DEFAULT_MAX_ALARM_RATE = 0.01
# The trial timeout of a stage: its observation plus this much for the observation's run-on for
# late windows (observe.MIN_WINDOWS_GRACE_S), CONFIRM to arrive and a stall to be noticed; after it
# an unconfirmed device reverts by itself (PROTOCOL.md 5.3).
TRIAL_MARGIN_S = 120
# ... plus this much per device the stage deploys beyond one concurrent batch: the first devices
# activate (their trial timer starts) while the stage's last ones are still transferring.
TRIAL_DEPLOY_ALLOWANCE_S = 10
# On resume, the devices' retained HELLOs (what each runs now) must arrive within this long.
HELLO_WAIT_S = 10.0
# How often the HELLO wait wakes.
HELLO_POLL_S = 0.2


@dataclass(frozen=True)
class StagedProgress:
    """One progress report: stage `stage` (0-based) of `stages`, its `phase` (deploy, observe,
    confirm, rollback, resume), the phase's completed fraction and a sentence."""

    stage: int
    stages: int
    phase: str
    fraction: float
    message: str = ""


StagedProgressFn = Callable[[StagedProgress], None]


def parse_stages(text: str) -> list[str]:
    """"1,10%,100%" -> ["1", "10%", "100%"]; DataError for anything else, with the reason."""
    specs = [s.strip() for s in str(text).split(",") if s.strip()]
    if not specs:
        raise DataError("--stages needs at least one stage, e.g. 1,10%,100%")
    for spec in specs:
        number = spec[:-1] if spec.endswith("%") else spec
        try:
            value = float(number) if spec.endswith("%") else int(number)
        except ValueError:
            raise DataError(f"stage {spec!r} is neither a device count (5) nor a percentage (25%)") from None
        if spec.endswith("%") and not 0 < value <= 100:
            raise DataError(f"stage {spec!r}: a percentage must be in (0, 100]")
        if not spec.endswith("%") and value < 1:
            raise DataError(f"stage {spec!r}: a device count must be at least 1")
    return specs


def plan_stages(devices: list[str], specs: list[str]) -> list[tuple[str, list[str]]]:
    """Each stage's spec and the devices it adds, in order; the last stage must reach every target."""
    n = len(devices)
    reach = [min(n, math.ceil(n * float(s[:-1]) / 100 - 1e-9) if s.endswith("%") else int(s)) for s in specs]
    for spec, prev, cur in zip(specs[1:], reach, reach[1:], strict=False):
        if cur < prev:
            raise DataError(f"stage {spec!r} reaches {cur} devices, fewer than the stage before it ({prev}): "
                            "stages are cumulative and must grow")
    if reach[-1] < n:
        raise DataError(f"the last stage {specs[-1]!r} reaches {reach[-1]} of the {n} devices: end with 100% "
                        "(or the device count)")
    out, done = [], 0
    for spec, cur in zip(specs, reach, strict=True):
        out.append((spec, list(devices[done:cur])))
        done = max(done, cur)
    return out


def trial_timeout(observe_s: float, stage_devices: int, concurrency: int) -> int:
    """The trial timeout a stage's devices get (see TRIAL_MARGIN_S)."""
    batches = max(0, math.ceil(stage_devices / max(concurrency, 1)) - 1)
    return int(observe_s) + TRIAL_MARGIN_S + TRIAL_DEPLOY_ALLOWANCE_S * batches * max(concurrency, 1)


def staged_deploy(model: str | Path, devices: list[str], stages: str | list[str], *,
                  observe_s: float = DEFAULT_OBSERVE_S, max_alarm_rate: float = DEFAULT_MAX_ALARM_RATE,
                  broker: str | None = None, fit_gate=None, concurrency: int = api.DEFAULT_CONCURRENCY,
                  progress: StagedProgressFn | None = None, cancel: threading.Event | None = None,
                  db_path: str | Path | None = None) -> RolloutRecord:
    """Run a staged rollout of `model` (NAME@VERSION, NAME@latest or a .tmlm path) to `devices`
    (see the module docstring); returns its final record. Bad arguments raise DataError before
    anything is stored or sent; an unreachable broker raises LinkError (the rollout is then
    recorded as stopped, nothing was deployed)."""
    devices = list(dict.fromkeys(devices))
    if not devices:
        raise DataError("name at least one --device for a staged rollout")
    specs = parse_stages(",".join(stages) if isinstance(stages, list) else stages)
    plan = plan_stages(devices, specs)
    _check_options(observe_s, max_alarm_rate, max(len(ds) for _, ds in plan), concurrency)
    image = api.load_image(model)
    store = StagedStore(db_path)
    rec = store.create(_persistent_name(model, image), image.name, image.version, devices, plan, observe_s,
                       max_alarm_rate, broker)
    log.info("staged rollout %d: %s to %d devices in stages %s", rec.id, rec.model, len(devices), specs)
    return _drive(store, rec, image, broker, fit_gate, concurrency, progress, cancel)


def resume(rollout_id: int, *, broker: str | None = None, observe_s: float | None = None, fit_gate=None,
           concurrency: int = api.DEFAULT_CONCURRENCY,
           progress: StagedProgressFn | None = None, cancel: threading.Event | None = None,
           db_path: str | Path | None = None) -> RolloutRecord:
    """Take over an interrupted rollout and finish it (module docstring, "Restart"). A rollout that
    is finished is returned as it is; one whose process still runs raises DataError. `observe_s`
    replaces the observation window of the stages still to run."""
    store = StagedStore(db_path)
    rec = store.get(rollout_id)
    if rec.state != RUNNING:
        return rec
    if observe_s is not None:
        _check_options(observe_s, rec.max_alarm_rate, max(len(s.devices) for s in rec.stages), concurrency)
    if not store.claim(rollout_id):
        raise DataError(f"staged rollout {rollout_id} is still being run by process {rec.owner_pid}")
    if observe_s is not None:
        store.set_observe(rollout_id, observe_s)
    image = api.load_image(rec.model)
    if (image.name, image.version) != (rec.model_name, rec.model_version):
        raise DataError(f"{rec.model} is now {image.name}@{image.version}, not the rollout's "
                        f"{rec.model_name}@{rec.model_version}")
    log.info("staged rollout %d: resuming at %s", rec.id, rec.where)
    return _drive(store, store.get(rollout_id), image, broker or rec.broker, fit_gate, concurrency, progress, cancel)


def _check_options(observe_s: float, max_alarm_rate: float, biggest_stage: int, concurrency: int) -> None:
    if not observe_s > 0:
        raise DataError("--observe must be more than 0 seconds")
    if not 0 <= max_alarm_rate < 1:
        raise DataError("--max-alarm-rate must be in [0, 1)")
    if trial_timeout(observe_s, biggest_stage, concurrency) > api.U16_MAX:
        raise DataError(f"--observe {observe_s:g} s with a stage of {biggest_stage} devices needs a trial timeout "
                        f"over {api.U16_MAX} s (a u16): observe less or use smaller stages")


def _persistent_name(model: str | Path, image: api.LoadedImage) -> str:
    """What a resume loads again: the file's absolute path, or the registry version (not @latest,
    which may move while the rollout runs)."""
    path = Path(str(model))
    if path.is_file():
        return str(path.resolve())
    return f"{image.name}@{image.version}"


def _drive(store: StagedStore, rec: RolloutRecord, image: api.LoadedImage, broker: str | None, fit_gate,
           concurrency: int, progress: StagedProgressFn | None, cancel: threading.Event | None) -> RolloutRecord:
    from app.deploy.links import broker_connection
    from app.services.fleet_monitor import FleetMonitor

    cancel = cancel or threading.Event()
    try:
        with broker_connection(broker) as conn, FleetMonitor(conn) as monitor:
            _Runner(store, rec, image, conn, monitor, fit_gate, concurrency, progress, cancel).run()
    except LinkError as exc:  # the broker is unreachable
        rec = store.get(rec.id)
        if all(st.state in (PENDING, SKIPPED, CONFIRMED) for st in rec.stages):  # nothing under way
            store.finish(rec.id, STOPPED, f"{exc}; nothing was deployed by this run")
        else:  # mid-stage: left running for `resume` (devices on trial revert at their timeout meanwhile)
            log.warning("staged rollout %d: %s at %s; resume it when the broker is back", rec.id, exc, rec.where)
        raise
    return store.get(rec.id)


class _Runner:
    """Drives one rollout's stages in order; every transition goes to the store first."""

    def __init__(self, store: StagedStore, rec: RolloutRecord, image: api.LoadedImage, conn, monitor, fit_gate,
                 concurrency: int, progress: StagedProgressFn | None, cancel: threading.Event) -> None:
        self.store, self.rec, self.image, self.conn, self.monitor = store, rec, image, conn, monitor
        self.fit_gate, self.concurrency, self._progress, self.cancel = fit_gate, concurrency, progress, cancel

    def progress(self, stage: StageRecord, phase: str, fraction: float, message: str = "") -> None:
        if self._progress is not None:
            self._progress(StagedProgress(stage.index, len(self.rec.stages), phase, fraction, message))

    def run(self) -> None:
        rid = self.rec.id
        for stage in self.rec.stages:
            if stage.state in (CONFIRMED, SKIPPED):
                continue
            if stage.state in (CONFIRMING, ROLLING_BACK, DEPLOYING, OBSERVING):
                if not self._finish_interrupted(stage):
                    return
                if stage.state == CONFIRMED:
                    continue
            if not self._run_stage(stage):
                return
        self.store.finish(rid, COMPLETED, f"all {len(self.rec.stages)} stages confirmed on "
                                          f"{len(self.rec.devices)} devices")

    # ------------------------------------------------------------------ one stage

    def _run_stage(self, stage: StageRecord) -> bool:
        rid, name, version = self.rec.id, self.image.name, self.image.version
        timeout = trial_timeout(self.rec.observe_s, len(stage.devices), self.concurrency)
        self.store.set_stage(rid, stage.index, DEPLOYING)
        self.progress(stage, "deploy", 0.0, f"{name}@{version} to {len(stage.devices)} devices on trial "
                                            f"({timeout} s timeout)")
        done: dict[str, float] = {}

        def on_device(device: str, sent: int, total: int) -> None:
            done[device] = sent / max(total, 1)
            self.progress(stage, "deploy", sum(done.values()) / len(stage.devices), device)

        results = api.deploy(self.image, stage.devices, connection=self.conn, trial=True, trial_timeout_s=timeout,
                             concurrency=self.concurrency, fit_gate=self.fit_gate, progress=on_device,
                             cancel=self.cancel, hellos=self._known(stage.devices))
        deployed = {"deploy": {r.device: {"outcome": r.outcome, "error": r.error_message,
                                          "host_deploy_s": r.host_deploy_s} for r in results}}
        failed = [r for r in results if not r.ok]
        if failed:
            reason = "; ".join(f"{r.device}: {r.outcome} ({r.error_message})" for r in failed)
            ok = [r.device for r in results if r.ok]
            return self._roll_back(stage, ok, deployed, f"deployment failed on {len(failed)} of "
                                   f"{len(results)} devices: {reason}")
        self.store.set_stage(rid, stage.index, OBSERVING, evidence=deployed)
        self.progress(stage, "observe", 0.0, f"observing {len(stage.devices)} devices for {self.rec.observe_s:g} s")
        seen = observe.observe(self.monitor, stage.devices, name, version, self.rec.observe_s, cancel=self.cancel,
                               progress=lambda f, text: self.progress(stage, "observe", f, text))
        verdicts = {d: observe.judge(o, self.rec.max_alarm_rate) for d, o in seen.items()}
        evidence = {**deployed, "max_alarm_rate": self.rec.max_alarm_rate,
                    "pooled": Rate(sum(o.alarms for o in seen.values()),
                                   sum(len(o.scores) for o in seen.values())).to_dict(),
                    "devices": {d: {**o.evidence(), "verdict": verdicts[d] or "passes"} for d, o in seen.items()}}
        bad = {d: v for d, v in verdicts.items() if v}
        if bad:
            return self._roll_back(stage, stage.devices, evidence,
                                   "; ".join(f"{d}: {v}" for d, v in bad.items()))
        pooled = Rate(sum(o.alarms for o in seen.values()), sum(len(o.scores) for o in seen.values()))
        self.store.set_stage(rid, stage.index, CONFIRMING, evidence=evidence,
                             reason=f"alarms {pooled.describe()}: no device above the "
                                    f"{100 * self.rec.max_alarm_rate:g} % allowed")
        return self._confirm(stage, stage.devices)

    def _confirm(self, stage: StageRecord, devices: list[str]) -> bool:
        failures = self._switch(stage, devices, api.confirm, "confirm")
        if failures:
            reason = ("confirm failed: " + "; ".join(f"{d}: {e}" for d, e in failures.items())
                      + "; those devices revert to their previous model at their trial timeout")
            self.store.set_stage(self.rec.id, stage.index, ROLLED_BACK, reason=reason)
            self.store.finish(self.rec.id, STOPPED, f"stage {stage.index + 1} ({stage.spec}): {reason}")
            return False
        self.store.set_stage(self.rec.id, stage.index, CONFIRMED)
        stage.state = CONFIRMED
        return True

    def _roll_back(self, stage: StageRecord, devices: list[str], evidence: dict | None, reason: str) -> bool:
        rid = self.rec.id
        self.store.set_stage(rid, stage.index, ROLLING_BACK, evidence=evidence, reason=reason)
        failures = self._switch(stage, devices, api.rollback, "rollback")
        if failures:
            reason += ("; rollback failed on " + "; ".join(f"{d}: {e}" for d, e in failures.items())
                       + " (those revert at their trial timeout)")
        self.store.set_stage(rid, stage.index, ROLLED_BACK, reason=reason)
        state = CANCELLED if self.cancel.is_set() else STOPPED
        self.store.finish(rid, state, f"stage {stage.index + 1} ({stage.spec}) rolled back: {reason}")
        log.warning("staged rollout %d: stage %d rolled back: %s", rid, stage.index + 1, reason)
        return False

    def _switch(self, stage: StageRecord, devices: list[str], fn, phase: str) -> dict[str, str]:
        """CONFIRM or ROLLBACK each device; {device: error} of those it failed on."""
        failures: dict[str, str] = {}
        for i, device in enumerate(devices):
            self.progress(stage, phase, i / max(len(devices), 1), device)
            try:
                result = fn(device, connection=self.conn, known=self.monitor.hellos([device]).get(device))
            except TinyMLOpsError as exc:
                failures[device] = str(exc)
                continue
            if not result.ok:
                failures[device] = result.error_message or "refused"
        self.progress(stage, phase, 1.0, f"{len(devices) - len(failures)} of {len(devices)} devices")
        return failures

    def _known(self, devices: list[str]) -> dict:
        """The HELLOs the fleet monitor holds for `devices`, once its retained ones are in (bounded by
        HELLO_WAIT_S; a device still missing is looked up by the deployment itself)."""
        self._await_monitor(lambda: len(self.monitor.hellos(devices)) == len(devices))
        return self.monitor.hellos(devices)

    def _await_monitor(self, done: Callable[[], bool]) -> None:
        """Wait (at most HELLO_WAIT_S, or until cancelled) for the fleet monitor to satisfy `done`."""
        deadline = time.monotonic() + HELLO_WAIT_S
        while not done() and time.monotonic() < deadline and not self.cancel.is_set():
            self.cancel.wait(HELLO_POLL_S)

    # ------------------------------------------------------------------ resume

    def _on_trial_of_version(self, devices: list[str]) -> list[str]:
        """Which of `devices` run this rollout's version on trial now (their retained HELLOs)."""
        self._await_monitor(lambda: all(self.monitor.get(d) is not None for d in devices))
        out = []
        for d in devices:
            rec = self.monitor.get(d)
            if rec is not None and rec.trial and (rec.model_name, rec.model_version) == (
                    self.image.name, self.image.version):
                out.append(d)
        return out

    def _finish_interrupted(self, stage: StageRecord) -> bool:
        """A stage its process left mid-way: finish its decision, or undo it to run it again."""
        on_trial = self._on_trial_of_version(stage.devices)
        self.progress(stage, "resume", 0.0, f"stage was {stage.state}; {len(on_trial)} devices on trial")
        if stage.state == CONFIRMING:  # the decision was taken and recorded: carry it out
            return self._confirm(stage, on_trial)
        if stage.state == ROLLING_BACK:
            return self._roll_back(stage, on_trial, None, stage.reason)
        # deploying or observing: the observation died with the process; undo, then run it again
        failures = self._switch(stage, on_trial, api.rollback, "rollback")
        if failures:
            return self._roll_back(stage, [], None, "interrupted; rollback before re-running failed on "
                                   + "; ".join(f"{d}: {e}" for d, e in failures.items()))
        log.info("staged rollout %d: stage %d interrupted while %s; rolled back %s, running it again",
                 self.rec.id, stage.index + 1, stage.state, on_trial)
        return True
