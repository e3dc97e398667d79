"""Latency dashboard: the deployment history (the paper's deployment, loading and inference
latencies) as a table and plots: per model version, per device, per transport, and model size
against deployment time. Exportable as CSV. Below, the staged rollouts' stages with the evidence of
each decision (app.ui.staged_rollouts)."""

from __future__ import annotations

import html
import logging
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.ui.staged_rollouts import StagedRolloutsView
from app.ui.table_model import ItemTableModel

log = logging.getLogger(__name__)

# Rows shown and plotted: recent history is what an operator compares; the CSV export has it all.
HISTORY_LIMIT = 2000
COLUMNS = ("When", "Device", "Model", "Transport", "Outcome", "Image", "Deploy (host)", "Deploy (device)",
           "Load", "Inference median", "Inference p95", "Notes")
PLOT_TITLE_SIZE = "10pt"
TRANSPORT_COLORS = {"serial": "#6a1b9a", "mqtt-push": "#00838f", "mqtt-pull": "#1565c0"}
# key -> (menu text, short name for plot titles, unit, value of a record in that unit)
METRICS = {
    "deploy": ("Deployment latency (host clock)", "Deployment", "s", lambda r: r.host_deploy_s),
    "load": ("Loading latency", "Loading", "s", lambda r: r.load_us / 1e6 if r.load_us is not None else None),
    "inference": ("Inference latency (median)", "Inference", "s",
                  lambda r: r.inference_median_us / 1e6 if r.inference_median_us is not None else None),
}


def _ms(us: int | None) -> str:
    """Device-reported microseconds, readable: µs below a millisecond, ms above."""
    if us is None:
        return "-"
    return f"{us} µs" if us < 1000 else f"{us / 1000:.2f} ms"


class HistoryModel(ItemTableModel):
    """The deployment history, newest first (DeploymentRecord per row)."""

    def __init__(self, parent=None) -> None:
        super().__init__(COLUMNS, parent)

    @property
    def records(self) -> list:
        return self.items

    def set_records(self, records: list) -> None:
        self.set_items(records)

    def cell(self, r, column: int, role: int):
        if role == Qt.ItemDataRole.DisplayRole:
            notes = ", ".join(n for n in ("emulated" if r.emulated else "", "trial" if r.trial else "",
                                          r.error_message or "") if n)
            return (time.strftime("%m-%d %H:%M:%S", time.localtime(r.started)), r.device,
                    f"{r.model_name}@{r.model_version}", r.transport, r.outcome,
                    f"{r.image_size} B" if r.image_size else "-",
                    "-" if r.host_deploy_s is None else f"{r.host_deploy_s:.2f} s", _ms(r.device_deploy_us),
                    _ms(r.load_us), _ms(r.inference_median_us), _ms(r.inference_p95_us), notes)[column]
        if role == Qt.ItemDataRole.ForegroundRole and column == 4:
            color = {"ok": "#2e7d32", "failed": "#c62828", "refused": "#c62828", "cancelled": "#ef6c00"}.get(r.outcome)
            return QBrush(QColor(color)) if color else None
        if role == Qt.ItemDataRole.ToolTipRole:
            return r.error_message or f"{r.model_sha[:16]} over {r.broker or r.port or r.transport}"
        return None


def _bar_chart(plot, labels: list[str], values: list[float], color: str) -> None:
    plot.clear()
    if not labels:
        return
    x = np.arange(len(labels))
    plot.addItem(pg.BarGraphItem(x=x, height=values, width=0.6, brush=color, pen=pg.mkPen(None)))
    plot.getAxis("bottom").setTicks([list(zip(x.tolist(), labels, strict=True))])
    plot.setXRange(-0.6, len(labels) - 0.4, padding=0)


class DashboardPage(QWidget):
    def __init__(self) -> None:
        super().__init__()
        self.model = HistoryModel(self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setSortingEnabled(False)
        self.metric = QComboBox()
        for key, (title, _short, _unit, _) in METRICS.items():
            self.metric.addItem(title, key)
        self.metric.setToolTip("Which latency the per-version, per-device and per-transport plots show")
        self.metric.currentIndexChanged.connect(lambda _i: self._plot())
        refresh = QPushButton("Refresh")
        refresh.setToolTip("Reload the deployment history (F5)")
        refresh.setShortcut("F5")
        refresh.clicked.connect(self.refresh)
        export = QPushButton("Export CSV…")
        export.setToolTip("Save the whole deployment history as CSV")
        export.clicked.connect(self._export_dialog)
        self.summary = QLabel("")
        # its own line below the controls, wrapped: a long summary or error (a path) is read in full
        # and never widens the page beside the fleet
        self.summary.setWordWrap(True)
        self.summary.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        top = QHBoxLayout()
        top.addWidget(QLabel("Plot:"))
        top.addWidget(self.metric)
        top.addStretch(1)
        top.addWidget(refresh)
        top.addWidget(export)

        pg.setConfigOptions(background="w", foreground="#333")
        self.plots = pg.GraphicsLayoutWidget()
        self.version_plot = self.plots.addPlot(row=0, col=0, title="by model version")
        self.device_plot = self.plots.addPlot(row=0, col=1, title="by device (mean)")
        self.transport_plot = self.plots.addPlot(row=1, col=0, title="by transport (mean)")
        self.size_plot = self.plots.addPlot(row=1, col=1)
        self.size_plot.setTitle("Image size vs deployment", size=PLOT_TITLE_SIZE)
        self.size_plot.setLabel("bottom", "image size", "B")
        self.size_plot.setLabel("left", "deployment", "s")
        self.size_plot.addLegend(offset=(5, 5), labelTextSize="8pt")
        self.version_plot.setLabel("bottom", "model version")
        for p in (self.version_plot, self.device_plot, self.transport_plot, self.size_plot):
            p.showGrid(x=False, y=True, alpha=0.2)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.plots)
        split.addWidget(self.table)
        self.staged = StagedRolloutsView()
        split.addWidget(self.staged)
        split.setSizes([420, 300, 160])
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.summary)
        layout.addWidget(split, 1)

    def refresh(self) -> None:
        from app.deploy.history import DeploymentHistory

        self.staged.refresh()
        try:
            records = DeploymentHistory().list(limit=HISTORY_LIMIT)
        except Exception as exc:  # an unreadable history file: say so, keep the window
            log.warning("cannot read the deployment history: %s", exc)
            self.summary.setText(f"<span style='color:#c62828'>cannot read the history: {html.escape(str(exc))}</span>")
            return
        self.model.set_records(records)
        deployments = [r for r in records if r.outcome in ("ok", "failed", "refused", "cancelled")]
        ok = [r for r in deployments if r.outcome == "ok"]
        self.summary.setText(f"{len(deployments)} deployments ({len(ok)} ok), "
                             f"{len(records) - len(deployments)} rollbacks/confirmations")
        self._plot()

    def _plot(self) -> None:
        key = self.metric.currentData() or "deploy"
        _title, short, unit, value = METRICS[key]
        ok = [r for r in self.model.records if r.outcome == "ok" and value(r) is not None]
        for p, what in ((self.version_plot, "by model version"), (self.device_plot, "by device (mean)"),
                        (self.transport_plot, "by transport (mean)")):
            # short titles: four plots share a ~700 px page beside the fleet; the metric is in the menu
            p.setTitle(f"{short} {what}", size=PLOT_TITLE_SIZE)
            p.setLabel("left", units=unit)  # SI prefixes: ms, µs
        # per version: every deployment a point, per family a colour
        self.version_plot.clear()
        families = sorted({r.model_name for r in ok})
        palette = ["#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f", "#c62828"]
        for i, family in enumerate(families):
            rows = [r for r in ok if r.model_name == family]
            self.version_plot.addItem(pg.ScatterPlotItem(
                x=[r.model_version for r in rows], y=[value(r) for r in rows], size=8,
                brush=pg.mkBrush(palette[i % len(palette)]), pen=pg.mkPen(None), name=family))
        versions = sorted({r.model_version for r in ok})
        self.version_plot.getAxis("bottom").setTicks([[(v, str(v)) for v in versions]] if versions else None)
        if versions:
            self.version_plot.setXRange(versions[0] - 0.5, versions[-1] + 0.5, padding=0)
        by_device: dict[str, list[float]] = defaultdict(list)
        by_transport: dict[str, list[float]] = defaultdict(list)
        for r in ok:
            by_device[r.device].append(value(r))
            by_transport[r.transport].append(value(r))
        devices = sorted(by_device)
        _bar_chart(self.device_plot, devices, [float(np.mean(by_device[d])) for d in devices], "#1565c0")
        transports = sorted(by_transport)
        _bar_chart(self.transport_plot, transports, [float(np.mean(by_transport[t])) for t in transports], "#00838f")
        self.size_plot.clear()
        timed = [r for r in ok if r.host_deploy_s is not None]
        for transport in sorted({r.transport for r in timed}):
            rows = [r for r in timed if r.transport == transport]
            self.size_plot.addItem(pg.ScatterPlotItem(
                x=[r.image_size for r in rows], y=[r.host_deploy_s for r in rows], size=8,
                brush=pg.mkBrush(TRANSPORT_COLORS.get(transport, "#333")), pen=pg.mkPen(None), name=transport))
        if timed:  # from zero: the slope (bytes per second) is what the eye should read
            self.size_plot.setXRange(0, max(r.image_size for r in timed) * 1.15, padding=0)
            self.size_plot.setYRange(0, max(r.host_deploy_s for r in timed) * 1.15, padding=0)

    def export_csv(self, path: str | Path) -> Path:
        from app.deploy.history import DeploymentHistory, to_csv

        path = Path(path)
        path.write_text(to_csv(DeploymentHistory().list()))
        return path

    def _export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export deployment history",
                                              f"deployments-{time.strftime('%Y%m%d')}.csv", "CSV (*.csv)")
        if not path:
            return
        try:
            self.export_csv(path)
        except OSError as exc:
            self.summary.setText(f"<span style='color:#c62828'>could not write {html.escape(path)}: "
                                 f"{html.escape(exc.strerror or str(exc))}</span>")
            return
        self.summary.setText(f"exported {html.escape(path)}")
