"""After an alarm: a few seconds of the device's raw stream, analysed, so the alarm's event says what is
likely wrong. The anomaly score says *that* the machine's vibration changed; the order and envelope
spectra (app.analysis.diagnosis) say *what*: imbalance, misalignment, looseness, a bearing race.

Qt-free; the GUI runs it in a worker when an alarm event arrives (app.ui.alarm_followup).
"""

from __future__ import annotations

from dataclasses import dataclass

from app.analysis.diagnosis import Analysis

# Seconds of stream captured after an alarm: the envelope spectrum's resolution (1/T) must separate a
# bearing's defect lines from the shaft's harmonics; 8 s gives 0.125 Hz lines at 3200 Hz.
CAPTURE_S = 8.0
# What the diagnosis names, in an engineer's words.
FAULT_WORDS = {"healthy": "no fault pattern", "imbalance": "imbalance", "misalignment": "misalignment",
               "looseness": "mechanical looseness", "outer_race": "an outer-race bearing defect",
               "inner_race": "an inner-race bearing defect", "unclassified": "a change no rule names"}


@dataclass(frozen=True)
class AlarmDiagnosis:
    device_id: str
    analysis: Analysis | None
    problem: str = ""  # why there is no analysis (no stream, too short, no machine description...)

    def sentence(self) -> str:
        """One line for the events panel."""
        if self.analysis is None:
            return f"no diagnosis after the alarm: {self.problem}"
        a = self.analysis
        evidence = f" ({a.evidence[0]})" if a.evidence else ""
        return (f"diagnosis after the alarm: likely {FAULT_WORDS.get(a.fault, a.fault)}{evidence}; "
                f"velocity {a.velocity_overall_mm_s:.1f} mm/s, ISO zone {a.zone.zone}")


def diagnose(monitor, device_id: str, seconds: float = CAPTURE_S, cancel=None) -> AlarmDiagnosis:
    """Capture `seconds` of `device_id`'s stream through `monitor` (a FleetMonitor) and analyse it with
    the device's machine description; a problem (offline, no stream, bad input) is an AlarmDiagnosis
    with its reason, not an exception."""
    from app.analysis.live_round import record_streams
    from app.analysis.machines import MachineStore
    from app.analysis.runner import analyze_recording
    from app.domain.errors import TinyMLOpsError

    record = monitor.get(device_id)
    if record is None or not record.online:
        return AlarmDiagnosis(device_id, None, "the device is offline")
    (recording,) = record_streams(monitor, [record], seconds, cancel=cancel)
    if recording.samples is None:
        return AlarmDiagnosis(device_id, None, recording.problem)
    try:
        with MachineStore() as store:
            machine = store.get(device_id)
        analysis = analyze_recording(recording.samples, recording.sample_rate, machine,
                                     recorded_shaft_hz=recording.shaft_hz)
    except TinyMLOpsError as exc:  # too short, no bearing geometry, a shaft speed outside the spectrum
        return AlarmDiagnosis(device_id, None, str(exc))
    return AlarmDiagnosis(device_id, analysis)
