"""The observation after a trial deployment (app.deploy.observe) on its own: records handed to its
listener as the FleetMonitor hands them (the real DeviceRecord), from a thread, as paho's would."""

from __future__ import annotations

import threading
import time

from app.deploy import observe
from app.services.fleet_monitor import DeviceRecord

DEVICE, MODEL, VERSION = "sim-001", "pump", 2
THRESHOLD = 3.0
# The observation asked for, seconds: short, since the late windows come after it.
OBSERVE_S = 0.5
# How long the feeder waits for the observation to take its listener before giving up.
LISTENER_WAIT_S = 30.0


class Hub:
    """The part of FleetMonitor that observe() uses: listeners called with (event, record)."""

    def __init__(self) -> None:
        self.listeners: list = []
        self.added = threading.Event()

    def add_listener(self, callback) -> None:
        self.listeners.append(callback)
        self.added.set()

    def remove_listener(self, callback) -> None:
        self.listeners.remove(callback)

    def telemetry(self, score: float) -> None:
        record = DeviceRecord(DEVICE, model_name=MODEL, model_version=VERSION, score=score, threshold=THRESHOLD,
                              alarm=score > THRESHOLD)
        for callback in list(self.listeners):
            callback("telemetry", record)


def test_windows_that_arrive_after_the_observation_time_still_count_until_there_are_enough():
    """A device whose first windows of the new version come late (a loaded broker or device) is
    judged on MIN_OBSERVED_WINDOWS windows, not failed for 'too few windows'."""
    hub = Hub()
    late = observe.MIN_OBSERVED_WINDOWS - 1
    past_the_end = threading.Event()

    def feed() -> None:
        assert hub.added.wait(LISTENER_WAIT_S)
        hub.telemetry(1.0)  # one window in time
        # the rest only once the observation's own time is over (this wait sets no outcome: sent
        # earlier, they would count just the same)
        past_the_end.wait(OBSERVE_S * 2)
        for _ in range(late):
            hub.telemetry(1.0)

    feeder = threading.Thread(target=feed)
    feeder.start()
    started = time.monotonic()
    try:
        seen = observe.observe(hub, [DEVICE], MODEL, VERSION, OBSERVE_S, cancel=threading.Event())
    finally:
        past_the_end.set()
        feeder.join()
    obs = seen[DEVICE]
    assert obs.problem == "" and len(obs.scores) == observe.MIN_OBSERVED_WINDOWS
    assert observe.judge(obs, 0.01) == ""
    assert hub.listeners == []
    # it ended with the window that made it enough, not at the end of the run-on
    assert time.monotonic() - started < observe.MIN_WINDOWS_GRACE_S


def test_a_device_still_short_of_windows_when_the_run_on_ends_cannot_be_judged(monkeypatch):
    monkeypatch.setattr(observe, "MIN_WINDOWS_GRACE_S", 1.0)  # under STALL_TIMEOUT_S: the run-on ends first
    hub = Hub()

    def feed() -> None:
        assert hub.added.wait(LISTENER_WAIT_S)
        hub.telemetry(1.0)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        seen = observe.observe(hub, [DEVICE], MODEL, VERSION, OBSERVE_S, cancel=threading.Event())
    finally:
        feeder.join()
    obs = seen[DEVICE]
    assert obs.problem.startswith(f"only 1 windows of v{VERSION} observed")
    assert f"at least {observe.MIN_OBSERVED_WINDOWS} are needed" in observe.judge(obs, 0.01)


def test_a_cancel_during_the_run_on_ends_it():
    hub = Hub()
    cancel = threading.Event()
    past_the_end = threading.Event()

    def feed() -> None:
        assert hub.added.wait(LISTENER_WAIT_S)
        hub.telemetry(1.0)
        past_the_end.wait(OBSERVE_S * 2)  # (cancelled earlier, the outcome is the same)
        cancel.set()

    feeder = threading.Thread(target=feed)
    feeder.start()
    started = time.monotonic()
    try:
        seen = observe.observe(hub, [DEVICE], MODEL, VERSION, OBSERVE_S, cancel=cancel)
    finally:
        past_the_end.set()
        feeder.join()
    assert seen[DEVICE].problem == "cancelled during the observation"
    assert time.monotonic() - started < observe.MIN_WINDOWS_GRACE_S  # not held to the end of the run-on


def test_other_versions_and_other_devices_do_not_count():
    """Only the deployed version's windows of the observed devices count: the previous model's last
    windows and another device's say nothing about the new one here."""
    hub = Hub()
    cancel = threading.Event()

    def feed() -> None:
        assert hub.added.wait(LISTENER_WAIT_S)
        other = DeviceRecord(DEVICE, model_name=MODEL, model_version=VERSION - 1, score=9.0, alarm=True)
        stranger = DeviceRecord("sim-404", model_name=MODEL, model_version=VERSION, score=9.0, alarm=True)
        for callback in list(hub.listeners):
            callback("telemetry", other)
            callback("telemetry", stranger)
        for _ in range(observe.MIN_OBSERVED_WINDOWS):
            hub.telemetry(THRESHOLD * 2)  # every window of the new version alarms

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        seen = observe.observe(hub, [DEVICE], MODEL, VERSION, OBSERVE_S, cancel=cancel)
    finally:
        feeder.join()
    obs = seen[DEVICE]
    assert len(obs.scores) == observe.MIN_OBSERVED_WINDOWS and obs.alarms == observe.MIN_OBSERVED_WINDOWS
    assert "even the low end is above" in observe.judge(obs, 0.01)
