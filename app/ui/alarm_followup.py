"""When a device alarms, capture a few seconds of its stream in a worker and add the diagnosis to the
events panel (app.analysis.alarm_diagnosis), so the alarm reads as a sentence about the machine.

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
            from app.analysis.alarm_diagnosis import diagnose

            return diagnose(monitor, device_id, cancel=cancel)

        worker = workers.Worker(job, name=f"diagnose {device_id}")
        worker.result.connect(lambda d: self.ctx.notify("ok" if d.analysis is not None and d.analysis.fault ==
                                                        "healthy" else "warning", d.device_id, d.sentence()))
        worker.errored.connect(lambda exc: self.ctx.notify("info", device_id,
                                                           f"no diagnosis after the alarm: {workers.error_text(exc)}"))
        worker.finished.connect(lambda: self.running.pop(device_id, None))
        self.running[device_id] = worker
        return worker.start()

    def stop(self) -> None:
        self.enabled = False
        for worker in list(self.running.values()):
            worker.cancel()
