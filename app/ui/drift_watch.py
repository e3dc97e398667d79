"""The fleet-wide drift check: every device of the telemetry history, not only the one the Trend tab
shows, judged every DRIFT_CHECK_INTERVAL_S in a worker (app.analysis.drift.fleet_drift).

Why: a machine whose normal changed starts to false-alarm whether or not anyone has it selected;
the operator should hear about it once, in the events panel, and get from that event to the
retrain ("normal has changed - retrain?" opens the Adapt dialog, app.ui.events). One event per
device per drift episode: a device is announced when it enters drift and forgotten when it is back
to ok or watch (the `announced` set is shared with the Trend tab's own indicator).
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QTimer, Signal

from app.analysis import drift
from app.ui import workers

# Drift is judged over an hour of telemetry (drift.DRIFT_WINDOW_S); a check every five minutes
# tells within minutes of the evidence being there and costs one indexed read per device.
DRIFT_CHECK_INTERVAL_S = 300.0
# The first check after start-up comes sooner: a drift already in the history of the last run is
# told within a minute of opening the app, after the session has connected.
DRIFT_FIRST_CHECK_S = 30.0


class DriftWatch(QObject):
    """`check()` reads every device's drift state in a worker; the timer calls it periodically.
    `checked` carries the list of DriftStatus of each completed check."""

    checked = Signal(object)

    def __init__(self, ctx, announced: set[str], parent=None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.announced = announced
        self.worker: workers.Worker | None = None
        self.timer = QTimer(self)
        self.timer.setInterval(int(DRIFT_CHECK_INTERVAL_S * 1000))
        self.timer.timeout.connect(self.check)
        self.first = QTimer(self)
        self.first.setSingleShot(True)
        self.first.setInterval(int(DRIFT_FIRST_CHECK_S * 1000))
        self.first.timeout.connect(self.check)

    def start(self) -> None:
        self.first.start()
        self.timer.start()

    def check(self) -> workers.Worker | None:
        """Start a check unless one still runs or there is no history (not connected)."""
        if self.worker is not None and not self.worker.done:
            return None
        session = self.ctx.session()
        history = getattr(session, "history", None)
        if history is None:
            return None

        def job(_progress, _cancel) -> list[drift.DriftStatus]:
            history.flush()  # the latest telemetry counts too
            return drift.fleet_drift(history.path)

        self.worker = workers.Worker(job, name="drift check")
        self.worker.result.connect(self._checked)
        self.worker.errored.connect(lambda exc: self.ctx.show_status(
            f"Drift check not run: {workers.error_text(exc)}"))
        self.worker.start()
        return self.worker

    def observe(self, status: drift.DriftStatus) -> None:
        """One device's state, from this check or the Trend tab: the event on entering drift."""
        if status.state == drift.DRIFT and status.device not in self.announced:
            self.announced.add(status.device)
            self.ctx.notify("warning", status.device, drift.drift_event_text(status))
        elif status.state in (drift.OK, drift.WATCH):
            self.announced.discard(status.device)

    def _checked(self, states: list[drift.DriftStatus]) -> None:
        for status in states:
            self.observe(status)
        self.checked.emit(states)

    def shutdown(self) -> None:
        self.first.stop()
        self.timer.stop()
        if self.worker is not None and not self.worker.done:
            self.worker.cancel()
            self.worker.wait()
