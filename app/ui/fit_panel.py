"""Fit-to-machine panel of the deploy wizard: per target device, will the chosen version false-alarm
on that machine's normal running (app.deploy.fit_check)? The check runs in a worker (TFLM scoring and,
for a device without telemetry history, a stream capture take seconds); the table shows windows,
predicted false alarms with their 95 % interval, median and 99th-percentile score against the
threshold, the verdict and the reason in words. Devices that will false-alarm are not deployed to
unless the operator ticks "deploy anyway"."""

from __future__ import annotations

import html
import logging

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.deploy import fit_check
from app.ui import workers

log = logging.getLogger(__name__)

COLUMNS = ("Device", "Verdict", "Windows", "False alarms (95 % CI)", "Predicted / machine-day",
           "Median / p99 score", "Threshold", "Reason")
VERDICT_COLOURS = {fit_check.FITS: Qt.GlobalColor.darkGreen, fit_check.MARGINAL: Qt.GlobalColor.darkYellow,
                   fit_check.WILL_FALSE_ALARM: Qt.GlobalColor.red, fit_check.UNCHECKED: Qt.GlobalColor.gray}


class FitPanel(QWidget):
    """`start(source, targets, session, via)` checks in a worker; `gate()` is the deployment's fit gate."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.force = QCheckBox("Deploy anyway to devices predicted to false-alarm")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.status)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.force)
        self.worker: workers.Worker | None = None
        self.reports: list[fit_check.DeviceFit] | None = None
        self.error: str | None = None

    def start(self, source, targets: list[str], session, via: str) -> None:
        """Check `source` (registry ref or .tmlm path) against `targets`; captures over the session's
        monitor for MQTT devices without enough history, history only over serial."""
        self.stop()
        self.reports, self.error = None, None
        targets = list(targets)
        self.table.setRowCount(len(targets))
        for row, device in enumerate(targets):
            self.table.setItem(row, 0, QTableWidgetItem(device))
            self.table.setItem(row, 1, QTableWidgetItem("checking…"))
        self.status.setText("Checking the model against each machine's own recent normal running…")
        monitor = session.monitor if session is not None and via == "mqtt" else None
        history = session.history if session is not None else None

        def job(progress, cancel):
            from app.deploy import api

            image = api.load_image(source).model_image()  # parsed and checked once, by load_image
            if history is not None:
                history.flush()  # the latest telemetry counts too
            return fit_check.check_devices(image, targets, monitor=monitor, cancel=cancel,
                                           progress=lambda device, text: progress(0, f"{device}: {text}"))

        self.worker = workers.Worker(job, name="fit check")
        self.worker.progress.connect(lambda p: self.status.setText(html.escape(getattr(p, "text", ""))))
        self.worker.result.connect(self._show)
        self.worker.errored.connect(lambda exc: self._failed(workers.error_text(exc)))
        self.worker.start()

    def stop(self) -> None:
        if self.worker is not None and not self.worker.done:
            self.worker.cancel()

    @property
    def done(self) -> bool:
        return self.worker is not None and self.worker.done

    def _show(self, reports: list) -> None:
        self.reports = reports
        self.table.setRowCount(len(reports))
        for row, r in enumerate(reports):
            q = r.quantiles
            cells = (r.device_id, r.verdict, f"{r.windows} ({r.source})",
                     r.false_alarms.describe() if r.windows else "-",
                     "-" if r.predicted_per_day is None else f"{r.predicted_per_day:.2g}",
                     f"{q['p50']:.3g} / {q['p99']:.3g}" if q else "-", f"{r.threshold:.3g}", r.reason)
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col == 1:
                    item.setForeground(VERDICT_COLOURS.get(r.verdict, Qt.GlobalColor.black))
                if col == len(cells) - 1:
                    item.setToolTip(text)
                self.table.setItem(row, col, item)
        self.table.resizeColumnsToContents()
        bad = [r.device_id for r in reports if r.verdict == fit_check.WILL_FALSE_ALARM]
        if bad:
            self.status.setText(f"<span style='color:#c62828'><b>{html.escape(', '.join(bad))} will false-alarm "
                                "with this model</b> and will not be deployed to unless you tick "
                                "“deploy anyway”. The reason is in the table.</span>")
        else:
            self.status.setText("No target is predicted to false-alarm; see the table for the margin of each.")

    def _failed(self, message: str) -> None:
        self.error = message
        self.status.setText(f"<span style='color:#e65100'>Fit check not done: {html.escape(message)}. "
                            "The deployment checks the telemetry history again when it starts.</span>")

    def gate(self):
        """The fit gate for app.deploy.api.deploy: the panel's verdicts when the check finished, else a
        history-only check inside the deployment's worker (never a capture the operator waits on)."""
        force = self.force.isChecked()
        if self.reports is not None:
            reports = list(self.reports)
            return lambda _image, _devices, _connection: fit_check.refusals(reports, force)
        return fit_check.FitGate(force=force, capture_s=0.0)
