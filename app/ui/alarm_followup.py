"""When a device alarms, a worker finds which features drove its score (app.analysis.alarm_cause: the
device's model rerun on this host) and captures a few seconds of its stream for a diagnosis
(app.analysis.alarm_diagnosis); both go to the events panel as one sentence about the machine.

At most one diagnosis per device per COOLDOWN_S (an alarm lasting an hour is one episode, not 3,600
captures) and MAX_RUNNING at once (each holds a stream lease on its device); the GUI thread only
starts workers and draws their sentences.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QObject

from app.ui import workers
from app.ui.context import PageContext

# One diagnosis per device per this long: an alarm episode, not each alarming telemetry message.
COOLDOWN_S = 600.0
# Captures at once: each streams ~100 kB/s from its device over the broker.
MAX_RUNNING = 2


class AlarmFollowUp(QObject):
    def __init__(self, ctx: PageContext, parent=None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.enabled = True
        self.running: dict[str, workers.Worker] = {}
        self._last: dict[str, float] = {}
        self._explainer = None  # AlarmExplainer, made in the first worker (it imports the interpreter)

    def on_events(self, events: list) -> None:
        """The fleet's events as the window receives them: (level, device, text) tuples."""
        for level, device, _text in events:
            if level == "alarm" and device:
                self.diagnose(device)

    def diagnose(self, device_id: str, now: float | None = None) -> workers.Worker | None:
        now = time.monotonic() if now is None else now
        session = self.ctx.session()
        if (not self.enabled or session is None or getattr(session, "monitor", None) is None
                or device_id in self.running or len(self.running) >= MAX_RUNNING
                or now - self._last.get(device_id, -COOLDOWN_S) < COOLDOWN_S):
            return None
        self._last[device_id] = now
        monitor = session.monitor

        def job(_progress, cancel):
            from app.analysis.alarm_cause import AlarmExplainer
            from app.analysis.alarm_diagnosis import diagnose

            record = monitor.get(device_id)
            if self._explainer is None:
                self._explainer = AlarmExplainer()  # thread-safe: it locks around its interpreters
            cause = self._explainer.text(record) if record is not None and record.alarm else None
            return cause, diagnose(monitor, device_id, cancel=cancel)

        worker = workers.Worker(job, name=f"diagnose {device_id}")
        worker.result.connect(self._done)
        worker.errored.connect(lambda exc: self.ctx.notify("info", device_id,
                                                           f"no diagnosis after the alarm: {workers.error_text(exc)}"))
        worker.finished.connect(lambda: self.running.pop(device_id, None))
        self.running[device_id] = worker
        return worker.start()

    def _done(self, result) -> None:
        cause, diagnosis = result
        healthy = diagnosis.analysis is not None and diagnosis.analysis.fault == "healthy"
        text = f"alarm {cause}; {diagnosis.sentence()}" if cause else diagnosis.sentence()
        self.ctx.notify("ok" if healthy and not cause else "warning", diagnosis.device_id, text)

    def stop(self) -> None:
        self.enabled = False
        for worker in list(self.running.values()):
            worker.cancel()
