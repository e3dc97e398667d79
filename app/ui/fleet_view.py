"""Fleet browser: search box, status filter and a tree view over FleetModel through FleetFilter.

A widget that shows and emits: it owns no devices; the main window reacts to its signals. Sites,
lines and machines start collapsed, so a 10,000-device fleet puts a handful of rows on screen
(the view and the proxy only ever touch the rows of opened groups); a search or state filter
that leaves few devices opens their groups.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QItemSelectionModel, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QLineEdit,
    QMenu,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from app.ui.columns import install_column_menu
from app.ui.fleet_filter import FleetFilter
from app.ui.fleet_model import (
    COL_FIRMWARE,
    COL_NAME,
    COL_PROFILE,
    COL_SCORE,
    COL_SEEN,
    COLUMNS,
    DEVICE_ID_ROLE,
    STATUSES,
    FleetModel,
)

# Sorted by score or last seen, the order is refreshed this often (not on every telemetry batch).
RESORT_INTERVAL_S = 2.0
# Telemetry values (scores, ages) on screen are redrawn at most this often: the model takes a batch
# every frame, and repainting the visible rows at 60 Hz would cost more than the batches.
REPAINT_INTERVAL_MS = 250
# With a search or state filter set, devices that appeared or changed state are re-judged at most
# this often: a pass over 10,000 devices takes ~10 ms, and states change in most batches.
REFILTER_INTERVAL_MS = 250
VOLATILE_COLUMNS = (COL_SCORE, COL_SEEN)
# Column widths (px) that fit their usual content; the user can resize, and the state is saved.
COLUMN_WIDTHS = (130, 130, 105, 70, 85, 105, 70, 65, 75)
# Columns widen to their content (never narrower than above, never wider than this) while the
# fleet fills and its first scores arrive, until the user resizes a column or a saved layout exists.
COLUMN_MAX_WIDTH = 240
AUTOSIZE_PERIOD_S = 15.0
# ... at most this often: telemetry batches come several times a second, widths need not follow them.
FIT_INTERVAL_S = 1.0
# Room between a cell's text and the next column (the header's own size hint already has room
# for its margins and the sort arrow).
COLUMN_PADDING = 6
# Hidden until the operator shows them (right-click the header): every device shows its firmware and
# profile in its tooltip, and without them the other columns, Transport and Velocity included, fit
# the ~800 px fleet dock.
HIDDEN_COLUMNS = (COL_FIRMWARE, COL_PROFILE)
# A search or state filter leaving at most this many devices opens their groups; more stay
# collapsed (opening thousands of rows would cost the GUI thread what collapsing saves).
EXPAND_MATCHES_MAX = 200


class FleetView(QWidget):
    """Signals carry device ids."""

    selection_changed = Signal(list)
    live_requested = Signal(str)
    compare_requested = Signal(str)
    deploy_requested = Signal(list)
    rollback_requested = Signal(str)
    confirm_requested = Signal(str)

    def __init__(self, model: FleetModel, parent=None) -> None:
        super().__init__(parent)
        self.model = model
        self.proxy = FleetFilter(self)
        self.proxy.setSourceModel(model)

        self.search = QLineEdit()
        self.search.setPlaceholderText("Search id, location, profile, model…  (Ctrl+F)")
        self.search.setClearButtonEnabled(True)
        self.search.setToolTip("Filter the fleet: a site, line or machine name shows all its devices")
        self.search.textChanged.connect(self._text_changed)
        self.status_filter = QComboBox()
        self.status_filter.addItem("All states", "")
        for status in STATUSES:
            self.status_filter.addItem(status.capitalize(), status)
        self.status_filter.setToolTip("Show only devices in this state (e.g. the red ones)")
        self.status_filter.currentIndexChanged.connect(
            lambda _i: (self.proxy.set_status(self.status_filter.currentData()), self._expand()))
        self._refilter_timer = QTimer(self)
        self._refilter_timer.setSingleShot(True)
        self._refilter_timer.setInterval(REFILTER_INTERVAL_MS)
        self._refilter_timer.timeout.connect(self._refilter_now)
        model.restructured.connect(self._restructured)

        self.tree = QTreeView()
        self.tree.setModel(self.proxy)
        self.tree.setSortingEnabled(True)
        self.tree.sortByColumn(COL_NAME, Qt.SortOrder.AscendingOrder)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.tree.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.tree.setUniformRowHeights(True)  # lets the view skip measuring 1,000 rows
        self.tree.setAlternatingRowColors(True)
        self.tree.setAllColumnsShowFocus(True)
        self.tree.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.tree.customContextMenuRequested.connect(self._context_menu)
        self.tree.doubleClicked.connect(self._double_clicked)
        self.tree.selectionModel().selectionChanged.connect(lambda *_: self.selection_changed.emit(self.selected()))
        for col, width in enumerate(COLUMN_WIDTHS):
            self.tree.setColumnWidth(col, width)
        install_column_menu(self.tree.header(), COLUMNS, HIDDEN_COLUMNS)
        # Column fitting measures the rows on screen only: Qt's default (the visible rows plus 1,000
        # more) read every device's every cell and froze the window ~1 s per telemetry batch while
        # a 1,000-device fleet filled (benchmarks/gui_responsiveness.py --profile).
        self.tree.header().setResizeContentsPrecision(0)
        self.auto_size_columns = True  # the main window clears it when it restored the user's columns
        self._sizing = False
        self._first_fill: float | None = None
        self._last_fit = 0.0
        self.tree.header().sectionResized.connect(self._section_resized)
        self._fit_pending = False
        self.proxy.rowsInserted.connect(self._rows_inserted)
        self.proxy.modelReset.connect(lambda: self._rows_inserted(None, 0, 0))
        self._last_resort = 0.0
        self._repaint_timer = QTimer(self)
        self._repaint_timer.setSingleShot(True)
        self._repaint_timer.setInterval(REPAINT_INTERVAL_MS)
        self._repaint_timer.timeout.connect(self._repaint_now)
        model.repaint.connect(self._repaint)

        top = QHBoxLayout()
        top.addWidget(self.search, 1)
        top.addWidget(self.status_filter)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(self.tree, 1)

    def _text_changed(self, text: str) -> None:
        self.proxy.set_text(text)
        self._expand()

    def _expand(self) -> None:
        """Open the groups of what a filter leaves when that is few devices; collapse otherwise."""
        if self.proxy.active and self.proxy.matches() <= EXPAND_MATCHES_MAX:
            self.tree.expandAll()
        else:
            self.tree.collapseAll()

    def _restructured(self) -> None:
        """Devices appeared or changed state: an active filter re-decides what it shows (soon)."""
        if self.proxy.active and not self._refilter_timer.isActive():
            self._refilter_timer.start()

    def _refilter_now(self) -> None:
        if self.proxy.active:
            self.proxy.refilter()
            if self.proxy.matches() <= EXPAND_MATCHES_MAX:
                self.tree.expandAll()

    def _rows_inserted(self, parent, first: int, last: int) -> None:
        # New groups stay collapsed (10,000 devices would be 10,000 rows to lay out); columns are
        # fitted once per event-loop pass however many rows arrived.
        if not self._fit_pending:
            self._fit_pending = True
            QTimer.singleShot(0, self._fit_after_insert)

    def _repaint(self) -> None:
        """Telemetry changed values only: redraw the visible rows within REPAINT_INTERVAL_MS."""
        if not self._repaint_timer.isActive():
            self._repaint_timer.start()

    def _repaint_now(self) -> None:
        """Redraw the visible rows; re-sort (throttled) when the view is sorted by a column
        telemetry moves."""
        self.tree.viewport().update()
        if self.auto_size_columns and self._first_fill is not None:
            if time.monotonic() - self._first_fill >= AUTOSIZE_PERIOD_S:
                self.auto_size_columns = False
            elif time.monotonic() - self._last_fit >= FIT_INTERVAL_S:
                self.fit_columns()
        column = self.tree.header().sortIndicatorSection()
        now = time.monotonic()
        if column in VOLATILE_COLUMNS and now - self._last_resort >= RESORT_INTERVAL_S:
            self._last_resort = now
            self.proxy.invalidate()

    def _fit_after_insert(self) -> None:
        self._fit_pending = False
        if self.auto_size_columns:
            if self._first_fill is None:
                self._first_fill = time.monotonic()
            self.fit_columns()

    def fit_columns(self) -> None:
        """Widen columns whose content (or header) is cut; never narrower than COLUMN_WIDTHS."""
        self._last_fit = time.monotonic()
        header = self.tree.header()
        self._sizing = True
        try:
            for col, default in enumerate(COLUMN_WIDTHS):
                if header.isSectionHidden(col):
                    continue
                want = max(default, self.tree.sizeHintForColumn(col) + COLUMN_PADDING, header.sectionSizeHint(col))
                want = min(want, COLUMN_MAX_WIDTH)
                if want > header.sectionSize(col):
                    header.resizeSection(col, want)
        finally:
            self._sizing = False

    def _section_resized(self, logical: int, old: int, _new: int) -> None:
        header = self.tree.header()
        stretched = header.stretchLastSection() and logical == header.count() - 1  # follows the view's width
        shown_or_hidden = header.isSectionHidden(logical) or old == 0  # the column menu, not a drag
        if not self._sizing and not stretched and not shown_or_hidden:
            # the user dragged a column edge: leave the widths to them
            self.auto_size_columns = False

    def selected(self) -> list[str]:
        """Selected device ids; a selected group counts as all its (visible) devices."""
        out: list[str] = []
        for index in self.tree.selectionModel().selectedRows(0):
            out.extend(self._devices_under(index))
        return list(dict.fromkeys(out))

    def _devices_under(self, index) -> list[str]:
        device_id = self.proxy.data(index, DEVICE_ID_ROLE)
        if device_id:
            return [device_id]
        out = []
        for row in range(self.proxy.rowCount(index)):
            out.extend(self._devices_under(self.proxy.index(row, 0, index)))
        return out

    def visible_devices(self) -> list[str]:
        return self._devices_under_root()

    def _devices_under_root(self) -> list[str]:
        out = []
        for row in range(self.proxy.rowCount()):
            out.extend(self._devices_under(self.proxy.index(row, 0)))
        return out

    def select_device(self, device_id: str) -> bool:
        source = self.model.index_of_device(device_id)
        index = self.proxy.mapFromSource(source)
        if not index.isValid():
            return False
        self.tree.selectionModel().select(
            index, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
        self.tree.scrollTo(index)
        return True

    def _double_clicked(self, index) -> None:
        device_id = self.proxy.data(index.siblingAtColumn(0), DEVICE_ID_ROLE)
        if device_id:
            self.live_requested.emit(device_id)

    def context_menu_for(self, device_id: str | None) -> QMenu:
        """The menu the tree shows for a device (also used by tests)."""
        menu = QMenu(self)
        selected = self.selected()
        record = self.model.record(device_id) if device_id else None
        act = menu.addAction("Show live", lambda: self.live_requested.emit(device_id))
        act.setEnabled(bool(device_id))
        act = menu.addAction("Compare with the live device", lambda: self.compare_requested.emit(device_id))
        act.setEnabled(bool(device_id))
        menu.addSeparator()
        n = len(selected)
        act = menu.addAction(f"Deploy a model to {n} selected device{'s' if n != 1 else ''}…",
                             lambda: self.deploy_requested.emit(selected))
        act.setEnabled(n > 0)
        menu.addSeparator()
        prev = record.prev_version if record else 0
        act = menu.addAction(f"Roll back to version {prev}" if prev else "Roll back (no previous version)",
                             lambda: self.rollback_requested.emit(device_id))
        act.setObjectName("rollback")
        act.setEnabled(bool(record and prev and record.online))
        act.setToolTip("Make the device's previous model active again")
        act = menu.addAction("Confirm trial model", lambda: self.confirm_requested.emit(device_id))
        act.setObjectName("confirm")
        act.setEnabled(bool(record and record.trial and record.online))
        return menu

    def _context_menu(self, pos) -> None:
        index = self.tree.indexAt(pos)
        device_id = self.proxy.data(index.siblingAtColumn(0), DEVICE_ID_ROLE) if index.isValid() else None
        self.context_menu_for(device_id).exec(self.tree.viewport().mapToGlobal(pos))
