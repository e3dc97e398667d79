"""Trend tab: the selected device's anomaly-score trend over hours to weeks, its drift indicator,
and "Adapt…", the one-step retrain of that machine (issue 14 items 5 and 6 in the GUI).

The trend is the telemetry history's per-minute roll-ups (mean and max score) against the deployed
model's threshold, with the device's deployments marked on the time axis. The drift indicator is
app.analysis.drift (windowed alarm rate with its Wilson interval against the limit a fitted model
stays under). Reading the history and the adapt itself run in workers; the GUI thread only draws.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.analysis import drift
from app.ui import workers
from app.ui.drift_watch import DriftWatch
from app.ui.progress import JobProgress

log = logging.getLogger(__name__)

# The trend is read again this often while a device is shown: roll-ups are per minute.
REFRESH_MS = 30_000
# Colours of the drift states (the fleet table's palette).
STATE_COLOURS = {drift.OK: "#2e7d32", drift.WATCH: "#f9a825", drift.DRIFT: "#c62828", drift.UNKNOWN: "#757575"}
STATE_TEXT = {drift.OK: "Fits", drift.WATCH: "Watch", drift.DRIFT: "Drift: normal has changed - retrain?",
              drift.UNKNOWN: "Not enough history"}
# Overall progress (percent) each adapt step spans, in the order the steps run.
ADAPT_SPANS = {"history": (0, 5), "record": (0, 35), "train": (35, 60), "convert": (60, 68), "validate": (68, 72),
               "check": (72, 82), "deploy": (82, 88), "observe": (88, 100)}
# The adapt dialog's defaults and bounds (seconds): app.deploy.adapt's CLI defaults.
ADAPT_RECORD_S, ADAPT_RECORD_MAX_S = 120, 600
ADAPT_OBSERVE_S, ADAPT_OBSERVE_MAX_S = 60, 3600


@dataclass(frozen=True)
class TrendData:
    """What one load read: roll-ups, the drift status and the device's deployments (time, label)."""

    device: str
    trend: drift.Trend
    status: drift.DriftStatus
    deployments: list[tuple[float, str]]


def adapt_percent(step: str, fraction: float) -> int:
    """An adapt step's fraction as the overall percent of the progress bar."""
    lo, hi = ADAPT_SPANS.get(step, (0, 100))
    return int(lo + (hi - lo) * max(0.0, min(1.0, fraction)))


class AdaptDialog(QDialog):
    """How long to record and to observe; the rest is `tinymlops adapt`'s defaults."""

    def __init__(self, device: str, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Adapt the model to {device}")
        self.record_s = QSpinBox()
        self.record_s.setRange(15, ADAPT_RECORD_MAX_S)
        self.record_s.setValue(ADAPT_RECORD_S)
        self.record_s.setSuffix(" s")
        self.observe_s = QSpinBox()
        self.observe_s.setRange(5, ADAPT_OBSERVE_MAX_S)
        self.observe_s.setValue(ADAPT_OBSERVE_S)
        self.observe_s.setSuffix(" s")
        form = QFormLayout(self)
        intro = QLabel(f"Record fresh normal running of {html.escape(device)}, train and convert a model, check "
                       "it fits the machine, deploy it on trial, watch its alarms, then confirm it or roll back. "
                       "Run it while the machine runs normally.")
        intro.setWordWrap(True)
        form.addRow(intro)
        form.addRow("Record normal data", self.record_s)
        form.addRow("Observe on trial", self.observe_s)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)


class TrendPanel(QWidget):
    """`show_device(id)` loads and draws; "Adapt…" runs app.deploy.adapt for it. `adapted` carries
    the AdaptReport when an adapt ends."""

    adapted = Signal(object)

    def __init__(self, ctx, parent=None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.device: str | None = None
        self.data: TrendData | None = None
        self.load_worker: workers.Worker | None = None
        self.adapt_worker: workers.Worker | None = None
        self.train_config = None  # app.ml.training.TrainConfig; None: adapt's default
        self.check_s: float | None = None  # fit-check capture; None: adapt's default
        self.announced: set[str] = set()  # devices whose drift the events panel was told about
        self.adapt_dialog: AdaptDialog | None = None  # open while it asks
        self.drift_watch = DriftWatch(ctx, self.announced, self)  # every device's drift, periodically
        self.drift_watch.start()

        self.title = QLabel("Select a device in the fleet")
        self.range = QComboBox()
        self.range.addItems(list(drift.TREND_RANGES))
        self.range.setCurrentIndex(1)
        self.range.currentIndexChanged.connect(lambda _i: self.reload())
        self.indicator = QLabel("")
        self.indicator.setWordWrap(True)
        self.indicator.setTextFormat(Qt.TextFormat.RichText)
        self.adapt_button = QPushButton("Adapt…")
        self.adapt_button.setToolTip("Retrain this machine's model on its normal running of today, check, "
                                     "deploy on trial, observe, confirm or roll back")
        self.adapt_button.setEnabled(False)
        self.adapt_button.clicked.connect(self._ask_adapt)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.hide()
        self.status = QLabel("")
        self.status.setWordWrap(True)

        self.plot = pg.PlotWidget(axisItems={"bottom": pg.DateAxisItem()})
        self.plot.setLabel("left", "anomaly score")
        self.plot.addLegend()
        self.mean_curve = self.plot.plot([], [], pen=pg.mkPen("#1565c0", width=2), name="mean / minute")
        self.max_curve = self.plot.plot([], [], pen=pg.mkPen("#90a4ae", style=Qt.PenStyle.DashLine),
                                        name="max / minute")
        self.threshold_line = pg.InfiniteLine(angle=0, pen=pg.mkPen("#c62828", width=1), label="threshold",
                                              labelOpts={"position": 0.05})
        self.threshold_line.hide()
        self.plot.addItem(self.threshold_line)
        self.marks: list[pg.InfiniteLine] = []

        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(self.range)
        top.addWidget(self.adapt_button)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.indicator)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        self.timer = QTimer(self)
        self.timer.setInterval(REFRESH_MS)
        self.timer.timeout.connect(self.reload)
        self.timer.start()

    # ------------------------------------------------------------------ trend

    def show_device(self, device_id: str | None) -> None:
        if device_id == self.device:
            return
        self.device, self.data = device_id, None
        self.title.setText(f"<b>{html.escape(device_id)}</b>" if device_id else "Select a device in the fleet")
        self.adapt_button.setEnabled(bool(device_id) and not self.adapting)
        self.reload()

    def reload(self) -> None:
        """Read the history for the shown device in a worker (skipped while one still reads)."""
        device = self.device
        if device is None or (self.load_worker is not None and not self.load_worker.done):
            return
        session = self.ctx.session()
        record = session.monitor.get(device) if session is not None and session.monitor is not None else None
        threshold = record.threshold if record is not None else None
        version = record.model_version if record is not None else 0
        history = session.history if session is not None else None
        path = history.path if history is not None else None
        since = drift.TREND_RANGES[self.range.currentText()]

        def job(_progress, _cancel) -> TrendData:
            from app.deploy.history import DeploymentHistory

            if history is not None:
                history.flush()  # the latest telemetry counts too
            marks = [(r.started, f"v{r.model_version} {r.outcome}")
                     for r in DeploymentHistory().list(device=device) if r.outcome in ("ok", "confirmed",
                                                                                        "rolled-back")]
            return TrendData(device, drift.trend(device, since, path), drift.drift_status(device, threshold, version,
                                                                                           path), marks)

        self.load_worker = workers.Worker(job, name=f"trend {device}")
        self.load_worker.result.connect(self._draw)
        self.load_worker.errored.connect(lambda exc: self.status.setText(
            f"History not read: {html.escape(workers.error_text(exc))}"))
        self.load_worker.start()

    def _draw(self, data: TrendData) -> None:
        if data.device != self.device:
            self.reload()  # the selection moved while this one was read
            return
        self.data = data
        t = data.trend
        ok = np.isfinite(t.mean)
        self.mean_curve.setData(t.ts[ok], t.mean[ok])
        ok_max = np.isfinite(t.high)
        self.max_curve.setData(t.ts[ok_max], t.high[ok_max])
        if data.status.threshold:
            self.threshold_line.setValue(data.status.threshold)
            self.threshold_line.show()
        else:
            self.threshold_line.hide()
        for mark in self.marks:
            self.plot.removeItem(mark)
        start = t.ts[0] if len(t) else None
        self.marks = []
        for when, label in data.deployments:
            if start is not None and when >= start:
                line = pg.InfiniteLine(pos=when, angle=90, pen=pg.mkPen("#6a1b9a", style=Qt.PenStyle.DotLine),
                                       label=label, labelOpts={"position": 0.9, "rotateAxis": (1, 0)})
                self.plot.addItem(line)
                self.marks.append(line)
        s = data.status
        colour = STATE_COLOURS[s.state]
        self.indicator.setText(f"<span style='color:{colour}'><b>{STATE_TEXT[s.state]}</b></span> - "
                               f"{html.escape(s.message)}")
        self.indicator.setToolTip(
            f"Last {drift.DRIFT_WINDOW_S / 3600:g} h of v{s.model_version}: drift when the low end of the alarm "
            f"rate's 95 % interval is above {100 * drift.DRIFT_ALARM_LIMIT:g} %")
        # announced once when a device enters drift (here or in the fleet-wide check), not at every reload
        self.drift_watch.observe(s)

    # ------------------------------------------------------------------ adapt

    @property
    def adapting(self) -> bool:
        return self.adapt_worker is not None and not self.adapt_worker.done

    def _ask_adapt(self) -> None:
        if self.device is not None:
            self.ask_adapt(self.device)

    def ask_adapt(self, device: str) -> AdaptDialog | None:
        """The retrain flow for `device` (the Adapt… button, or a drift event activated): show it and
        open the Adapt dialog (window-modal, not blocking); accepting it starts the adapt."""
        if self.adapting:
            self.status.setText("An adapt is running; wait for its decision.")
            return None
        self.show_device(device)
        if self.adapt_dialog is not None:
            self.adapt_dialog.reject()
        dialog = self.adapt_dialog = AdaptDialog(device, self)
        dialog.accepted.connect(lambda: self.start_adapt(float(dialog.record_s.value()),
                                                         float(dialog.observe_s.value()))
                                if self.device == device else None)
        dialog.finished.connect(lambda _r: setattr(self, "adapt_dialog", None) if self.adapt_dialog is dialog
                                else None)
        dialog.open()
        return dialog

    def start_adapt(self, record_s: float, observe_s: float) -> workers.Worker | None:
        """Run the one-step adapt of the shown device in a worker, its progress in the bar."""
        session = self.ctx.session()
        if self.device is None or self.adapting:
            return None
        if session is None:
            self.status.setText("Not connected to a broker.")
            return None
        device, config, check_s = self.device, self.train_config, self.check_s
        history = session.history if session is not None else None

        def job(progress, cancel):
            from app.deploy import adapt

            conn = session.open_connection()
            try:
                extra = {"check_s": check_s} if check_s is not None else {}
                return adapt.adapt(device, seconds=record_s, observe_s=observe_s, connection=conn, config=config,
                                   history_path=history.path if history is not None else None, cancel=cancel,
                                   progress=lambda p: progress(JobProgress(adapt_percent(p.step, p.fraction),
                                                                           f"{p.step}: {p.message}")), **extra)
            finally:
                conn.close()

        worker = workers.Worker(job, name=f"adapt {device}")
        worker.progress.connect(self._adapt_progress)
        worker.result.connect(self._adapt_done)
        worker.errored.connect(self._adapt_failed)
        self.adapt_worker = worker
        self.adapt_button.setEnabled(False)
        self.progress.setValue(0)
        self.progress.show()
        self.status.setText(f"Adapting {device}…")
        self.ctx.track_job(worker, f"adapt {device}")
        return worker.start()

    def _adapt_progress(self, p) -> None:
        self.progress.setValue(max(self.progress.value(), p.percent))
        self.status.setText(html.escape(p.text))

    def _adapt_done(self, report) -> None:
        self.progress.setValue(100)
        self.adapt_button.setEnabled(self.device is not None)
        level = "ok" if report.ok else "warning" if report.decision != "failed" else "error"
        self.status.setText(f"<b>{html.escape(report.decision)}</b> {html.escape(report.model or '')}: "
                            f"{html.escape(report.reason)}")
        self.ctx.notify(level, report.device, f"adapt {report.decision}: {report.reason}")
        self.ctx.deployments_changed()
        self.adapted.emit(report)
        self.data = None
        self.reload()

    def _adapt_failed(self, exc: BaseException) -> None:
        self.progress.hide()
        self.adapt_button.setEnabled(self.device is not None)
        text = workers.error_text(exc)
        self.status.setText(f"<span style='color:#c62828'>Adapt not run: {html.escape(text)}</span>")
        self.ctx.notify("error", self.device or "", f"adapt: {text}")

    def shutdown(self) -> None:
        self.timer.stop()
        self.drift_watch.shutdown()
        for worker in (self.load_worker, self.adapt_worker):
            if worker is not None and not worker.done:
                worker.cancel()
