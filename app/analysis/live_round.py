"""A maintenance round from the fleet as it runs now: a few seconds of raw stream from every online
device of a site, all at once, through one FleetMonitor (`tinymlops report --live SECONDS`)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from app.domain.errors import Cancelled, DataError, LinkError

log = logging.getLogger(__name__)

# Devices' retained statuses arrive within a second of subscribing; 3 s also catches one telemetry
# message (about 1 Hz) from each, as `fleet list` does.
DISCOVERY_S = 3.0
# How often the discovery looks at what arrived.
DISCOVERY_POLL_S = 0.05
# A recording may take this factor of its length (lost windows are replaced by later ones) ...
RECORD_TIME_FACTOR = 1.5
# ... plus this long for STREAM_START to reach each device and its first windows to come back.
STREAM_START_GRACE_S = 10.0
# A cancellable recording looks at its cancel flag this often.
CANCEL_POLL_S = 0.25


@dataclass
class LiveRecording:
    device_id: str
    location: str
    recorded: float
    samples: np.ndarray | None  # None when the device did not deliver; `problem` says why
    sample_rate: float
    shaft_hz: float | None
    anomaly_alarm: bool
    problem: str = ""


def _site_of(location: str) -> str:
    return location.split("/", 1)[0] if location else ""


def record_site(broker: str | None, site: str | None, seconds: float) -> list[LiveRecording]:
    """`seconds` of raw stream from every online device (on `site`, when given), recorded in parallel."""
    from app.deploy.links import broker_connection
    from app.services.fleet_monitor import FleetMonitor

    check_length(seconds)
    with broker_connection(broker) as conn, FleetMonitor(conn) as monitor:
        end = time.monotonic() + DISCOVERY_S
        while time.monotonic() < end:
            time.sleep(DISCOVERY_POLL_S)
        devices = [r for r in monitor.devices() if r.online and (not site or site in (r.site, _site_of(r.location)))]
        if not devices:
            raise LinkError(f"no online device of {site or 'any site'} on {conn.url.address}")
        return record_streams(monitor, devices, seconds)


def check_length(seconds: float) -> None:
    """DataError when `seconds` of stream is too short to analyse (fewer windows than a dataset needs)."""
    from app.ml.datasets import MIN_DATASET_WINDOWS
    from app.ml.features import DEFAULT_SPEC

    shortest = MIN_DATASET_WINDOWS * DEFAULT_SPEC.window / DEFAULT_SPEC.sample_rate
    if seconds < shortest:
        raise DataError(f"--live {seconds:g} s is too short to analyse: at least {shortest:.1f} s")


def record_streams(monitor, devices: list, seconds: float, cancel=None) -> list[LiveRecording]:
    """`seconds` of raw stream from each of `devices` (fleet-monitor records), all at once through
    `monitor`'s stream leases; a device that does not deliver in time gets its `problem` instead."""
    from app.ml.features import DEFAULT_SPEC
    from app.ml.recording import StreamRecorder

    recorders = {r.device_id: StreamRecorder(seconds) for r in devices}
    callbacks = {}
    for device_id, recorder in recorders.items():
        callbacks[device_id] = lambda _d, msg, rec=recorder: rec.feed(msg)
        monitor.add_stream_listener(device_id, callbacks[device_id])
    deadline = time.monotonic() + seconds * RECORD_TIME_FACTOR + STREAM_START_GRACE_S
    try:
        for recorder in recorders.values():
            while not recorder.done and recorder.error is None and time.monotonic() < deadline:
                recorder.wait(min(CANCEL_POLL_S, max(0.0, deadline - time.monotonic())))
                if cancel is not None and cancel.is_set():
                    raise Cancelled("stream recording cancelled")
    finally:
        for device_id, callback in callbacks.items():
            monitor.remove_stream_listener(device_id, callback)
    out = []
    for rec in devices:
        recorder = recorders[rec.device_id]
        latest = monitor.get(rec.device_id) or rec
        problem = ""
        if recorder.error is not None:
            problem = str(recorder.error)
        elif not recorder.done:
            problem = f"delivered {recorder.received} of {recorder.windows} stream windows in time"
        out.append(LiveRecording(rec.device_id, rec.location, time.time(),
                                 None if problem else recorder.samples(), float(DEFAULT_SPEC.sample_rate),
                                 latest.shaft_hz, bool(latest.alarm), problem))
        if problem:
            log.warning("live round: %s %s", rec.device_id, problem)
    return out
