"""The latency dashboard's "Staged rollouts" table: every stage of the recent staged rollouts with
its decision and the evidence it was taken on (alarm counts, their Wilson 95 % interval, score
quantiles), read from app.deploy.staged_store in a worker.

Why: a stage that was rolled back (or confirmed) should be explainable from the GUI as it is from
`tinymlops rollouts --json`: which devices, how many windows, how many alarms, how sure.
"""

from __future__ import annotations

import html
import time

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QAbstractItemView, QLabel, QTableView, QVBoxLayout, QWidget

from app.ui import workers
from app.ui.table_model import ItemTableModel

# Recent rollouts shown: the table is for the ones an operator is following, `tinymlops rollouts` has all.
ROLLOUTS_SHOWN = 20
COLUMNS = ("Rollout", "Model", "Stage", "Devices", "State", "Alarms", "95 % CI", "Scores p50 / p90 / p99",
           "Decided", "Reason")
STATE_COLOURS = {"confirmed": "#2e7d32", "rolled-back": "#c62828", "failed": "#c62828", "observing": "#ef6c00"}


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def stage_row(rollout, stage) -> tuple:
    """A stage's cells from its record and evidence (app.deploy.staged: pooled Rate dict, per-device
    score quantiles); '-' where the stage has not been observed yet."""
    ev = stage.evidence or {}
    pooled = ev.get("pooled")
    alarms = f"{pooled['count']}/{pooled['n']}" if pooled else "-"
    ci = f"{_pct(pooled['ci95'][0])}-{_pct(pooled['ci95'][1])}" if pooled and pooled.get("ci95") else "-"
    quantiles = [d.get("score_quantiles") for d in ev.get("devices", {}).values() if d.get("score_quantiles")]
    # the worst device's quantiles: a stage is rolled back on its worst device
    scores = (" / ".join(f"{max(q[k] for q in quantiles):.2f}" for k in ("p50", "p90", "p99"))
              if quantiles else "-")
    decided = time.strftime("%m-%d %H:%M:%S", time.localtime(stage.decided)) if stage.decided else "-"
    return (f"#{rollout.id}", f"{rollout.model_name}@{rollout.model_version}",
            f"{stage.index + 1}/{len(rollout.stages)} ({stage.spec})", str(len(stage.devices)), stage.state,
            alarms, ci, scores, decided, stage.reason)


def stage_tooltip(stage) -> str:
    """Per device: windows, alarms with their interval, quantiles, verdict."""
    lines = []
    for device, d in (stage.evidence or {}).get("devices", {}).items():
        a = d.get("alarms") or {}
        q = d.get("score_quantiles") or {}
        lines.append(f"{device}: {d.get('windows', 0)} windows, alarms {a.get('count', 0)}/{a.get('n', 0)}"
                     + (f" (95 % CI {_pct(a['ci95'][0])}-{_pct(a['ci95'][1])})" if a.get("ci95") else "")
                     + (f", p99 {q['p99']:.2f} vs threshold {d.get('threshold')}" if q else "")
                     + f": {d.get('verdict', d.get('problem', ''))}")
    return "\n".join(lines) or stage.reason or stage.state


class StagedModel(ItemTableModel):
    """(rollout, stage) per row, newest rollout first, its stages in order."""

    def __init__(self, parent=None) -> None:
        super().__init__(COLUMNS, parent)

    def set_rollouts(self, rollouts: list) -> None:
        self.set_items([(r, s) for r in rollouts for s in r.stages])

    def cell(self, item, column: int, role: int):
        rollout, stage = item
        if role == Qt.ItemDataRole.DisplayRole:
            return stage_row(rollout, stage)[column]
        if role == Qt.ItemDataRole.ForegroundRole and column == 4:
            colour = STATE_COLOURS.get(stage.state)
            return QBrush(QColor(colour)) if colour else None
        if role == Qt.ItemDataRole.ToolTipRole:
            return stage_tooltip(stage)
        return None


class StagedRolloutsView(QWidget):
    """The table and a line saying how many; `refresh()` reads the store in a worker."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.model = StagedModel(self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.title = QLabel("<b>Staged rollouts</b>")
        self.title.setWordWrap(True)
        self.worker: workers.Worker | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.table, 1)

    def refresh(self) -> workers.Worker | None:
        """Read the recent rollouts in a worker (skipped while one still reads)."""
        if self.worker is not None and not self.worker.done:
            return None

        def job(_progress, _cancel) -> list:
            from app.deploy.staged_store import StagedStore

            return StagedStore().list(limit=ROLLOUTS_SHOWN)

        self.worker = workers.Worker(job, name="staged rollouts")
        self.worker.result.connect(self._show)
        self.worker.errored.connect(lambda exc: self.title.setText(
            f"<b>Staged rollouts</b> <span style='color:#c62828'>not read: "
            f"{html.escape(workers.error_text(exc))}</span>"))
        self.worker.start()
        return self.worker

    def _show(self, rollouts: list) -> None:
        self.model.set_rollouts(rollouts)
        self.title.setText(f"<b>Staged rollouts</b>: {len(rollouts)} recent, "
                           f"{self.model.rowCount()} stages (hover a stage for each device's evidence)")

    def shutdown(self) -> None:
        if self.worker is not None and not self.worker.done:
            self.worker.wait()
