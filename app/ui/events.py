"""Events and alarms panel: a bounded table of what happened (devices appearing, going offline,
alarms raised and cleared, models changed, deployments, errors), newest first.

A drift event ("normal has changed - retrain?", app.analysis.drift) leads to its remedy: activating
it (double-click, or "Retrain…" in its context menu) emits `retrain_requested(device)`, which the
window answers by selecting the device and opening the Adapt dialog for it."""

from __future__ import annotations

import time
from collections import deque

from PySide6.QtCore import QModelIndex, QPoint, Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.analysis.drift import DRIFT_EVENT_TEXT
from app.analysis.fleet_events import transitions as transitions  # re-exported for the panel's callers
from app.ui.table_model import ItemTableModel

# Hours of events at a plant's pace; older ones drop off so a long session never grows.
MAX_EVENTS = 2000
LEVEL_COLORS = {"alarm": "#c62828", "error": "#c62828", "warning": "#ef6c00", "info": "#333333", "ok": "#2e7d32"}
HEADERS = ("Time", "Level", "Device", "Event")


class EventModel(ItemTableModel):
    """(time, level, device, text) per row, newest first; at most MAX_EVENTS."""

    def __init__(self, parent=None) -> None:
        super().__init__(HEADERS, parent)
        self._rows: deque[tuple[float, str, str, str]] = deque(maxlen=MAX_EVENTS)
        self.items = self._rows

    def add(self, level: str, device: str, text: str, when: float | None = None) -> None:
        self.add_many([(level, device, text)], when)

    def add_many(self, events: list[tuple[str, str, str]], when: float | None = None) -> None:
        if not events:
            return
        when = when or time.time()
        resetting = len(self._rows) + len(events) > MAX_EVENTS  # the oldest rows drop off: reset
        if resetting:
            self.beginResetModel()
        else:
            self.beginInsertRows(QModelIndex(), 0, len(events) - 1)
        for level, device, text in events:
            self._rows.appendleft((when, level, device, text))
        if resetting:
            self.endResetModel()
        else:
            self.endInsertRows()

    def clear(self) -> None:
        self.beginResetModel()
        self._rows.clear()
        self.endResetModel()

    def rows(self) -> list[tuple[float, str, str, str]]:
        return list(self._rows)

    def retrain_device(self, row: int) -> str | None:
        """The device whose drift event is at `row`, None for any other event."""
        if not 0 <= row < len(self._rows):
            return None
        _when, _level, device, text = self._rows[row]
        return device if device and text.startswith(DRIFT_EVENT_TEXT) else None

    def count(self, level: str) -> int:
        return sum(1 for r in self._rows if r[1] == level)

    def cell(self, row: tuple[float, str, str, str], column: int, role: int):
        when, level, device, text = row
        if role == Qt.ItemDataRole.DisplayRole:
            return (time.strftime("%H:%M:%S", time.localtime(when)), level, device, text)[column]
        if role == Qt.ItemDataRole.ForegroundRole:
            return QBrush(QColor(LEVEL_COLORS.get(level, "#333")))
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{time.ctime(when)}: {text}"
        return None


class EventsPanel(QWidget):
    """The events table; `retrain_requested(device)` when a drift event is activated."""

    retrain_requested = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.model = EventModel(self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.horizontalHeader().setStretchLastSection(True)
        for col, width in enumerate((70, 60, 90)):
            self.table.setColumnWidth(col, width)
        self.table.doubleClicked.connect(lambda index: self.activate(index.row()))
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._context_menu)
        self.summary = QLabel("")
        clear = QPushButton("Clear")
        clear.setToolTip("Forget the events shown (the devices are not affected)")
        clear.clicked.connect(self._clear)
        top = QHBoxLayout()
        top.addWidget(self.summary, 1)
        top.addWidget(clear)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(top)
        layout.addWidget(self.table)
        self.model.rowsInserted.connect(self._update_summary)
        self.model.modelReset.connect(self._update_summary)

    def activate(self, row: int) -> bool:
        """Open the remedy of the event at `row`: the retrain flow of a drift event. False for others."""
        device = self.model.retrain_device(row)
        if device is None:
            return False
        self.retrain_requested.emit(device)
        return True

    def context_menu_for(self, row: int) -> QMenu:
        menu = QMenu(self)
        device = self.model.retrain_device(row)
        retrain = menu.addAction(f"Retrain {device}… (Adapt)" if device else "Retrain… (Adapt)")
        retrain.setEnabled(device is not None)
        retrain.setToolTip("Select the device and open the Adapt dialog: retrain on today's normal running")
        retrain.triggered.connect(lambda: self.activate(row))
        return menu

    def _context_menu(self, pos: QPoint) -> None:
        index = self.table.indexAt(pos)
        if index.isValid():
            self.context_menu_for(index.row()).popup(self.table.viewport().mapToGlobal(pos))

    def _clear(self) -> None:
        self.model.clear()

    def _update_summary(self, *_args) -> None:
        alarms = self.model.count("alarm")
        self.summary.setText(f"{self.model.rowCount()} events" + (f", {alarms} alarms" if alarms else ""))
