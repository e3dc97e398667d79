"""Events and alarms panel: a bounded table of what happened (devices appearing, going offline,
alarms raised and cleared, models changed, deployments, errors), newest first."""

from __future__ import annotations

import time
from collections import deque

from PySide6.QtCore import QModelIndex, Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QAbstractItemView, QHBoxLayout, QLabel, QPushButton, QTableView, QVBoxLayout, QWidget

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

    def _clear(self) -> None:
        self.model.clear()

    def _update_summary(self, *_args) -> None:
        alarms = self.model.count("alarm")
        self.summary.setText(f"{self.model.rowCount()} events" + (f", {alarms} alarms" if alarms else ""))
