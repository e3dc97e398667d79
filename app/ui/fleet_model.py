"""The fleet as a Qt tree model (site / line / machine / device), fed in batches.

FleetMonitor listeners run on the network thread and only drop the newest record per device into
a dict; a GUI timer (`flush`, once per frame) applies the batch: new devices are inserted per
parent in one `beginInsertRows` (a plant's worth at once: one model reset), state changes are
announced with one `dataChanged` per parent and row range, and telemetry values only ask the view
to repaint. So 10,000 devices at 1 Hz cost ~170 records a frame and a handful of signals, not
10,000 signals; sorting and filtering see only state changes (app.ui.fleet_filter).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from PySide6.QtCore import QAbstractItemModel, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QBrush, QColor

from app.analysis.fleet_events import CauseFn, transitions
from app.protocol.codes import StateLabel
from app.ui.fleet_stats import GroupStats, group_stats, mark_dirty
from app.ui.fleet_text import (
    SCORE_WARN_RATIO,
    age_text,
    device_tooltip,
    group_path,
    num_text,
    ratio_text,
    score_level,
    search_text,
    trust_text,
)
from app.ui.fleet_zones import ZoneCache

__all__ = ["FleetModel", "Node", "age_text", "group_path", "search_text", "status_of", "trust_text"]

COLUMNS = ("Device", "Status", "Profile", "Firmware", "Model", "Score", "Last seen", "Transport", "Velocity")
COL_NAME, COL_STATUS, COL_PROFILE, COL_FIRMWARE, COL_MODEL, COL_SCORE, COL_SEEN, COL_TRANSPORT, COL_VELOCITY = range(9)
# The operator's one-word status: the device's own state (StateLabel) where that says it,
# and two of the view's own: a deployment in progress, a score above the threshold.
ONLINE, OFFLINE, STREAMING, UPDATING = StateLabel.ONLINE, StateLabel.OFFLINE, StateLabel.STREAMING, StateLabel.UPDATING
DEPLOYING, ALARM = "deploying", "alarm"
STATUSES = (ONLINE, OFFLINE, STREAMING, DEPLOYING, ALARM)
STATUS_COLORS = {ONLINE: "#2e7d32", OFFLINE: "#757575", STREAMING: "#1565c0", DEPLOYING: "#ef6c00",
                 ALARM: "#c62828"}
SCORE_COLORS = {"ok": "#2e7d32", "warn": "#ef6c00", "alarm": "#c62828"}

DEVICE_ID_ROLE = Qt.ItemDataRole.UserRole + 1
SORT_ROLE = Qt.ItemDataRole.UserRole + 2
STATUS_ROLE = Qt.ItemDataRole.UserRole + 3
KIND_ROLE = Qt.ItemDataRole.UserRole + 4
RECORD_ROLE = Qt.ItemDataRole.UserRole + 5

LEVELS = ("site", "line", "machine")
# More devices than this arriving in one batch are announced as one event, not one each.
APPEARED_DETAIL_MAX = 20
# More new devices than this in one batch (a plant's retained statuses on connecting) rebuild the
# views with one model reset instead of an insert per group: each insert made the sorting proxy
# re-sort its rows, ~2 s of GUI thread for 10,000 devices. A reset closes opened groups, which at
# that point nobody has opened yet.
RESET_INSERT_MIN = 500


def status_of(record, deploying: bool = False) -> str:
    """One word for the operator: deploying > offline > alarm > streaming > online."""
    if deploying or record.state == UPDATING:
        return DEPLOYING
    if record.state == OFFLINE:
        return OFFLINE
    if record.alarm:
        return ALARM
    if record.state == STREAMING:
        return STREAMING
    return ONLINE


def _structure(record, deploying: bool) -> tuple:
    """What filters, sorting by state and group counts depend on; telemetry values are not in it."""
    return (status_of(record, deploying), record.trial, record.model_name, record.model_version,
            record.firmware, record.profile, record.transport, record.location)


@dataclass(eq=False)
class Node:
    kind: str  # "root", "site", "line", "machine", "device"
    name: str
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)
    by_name: dict[str, Node] = field(default_factory=dict)
    record: object = None
    row: int = 0
    hay: str = ""  # a device's searchable text, lower case (set with its record's structure)
    dirty: bool = True  # a group's `stats` need recomputing (app.ui.fleet_stats)
    stats: GroupStats | None = None


class FleetModel(QAbstractItemModel):
    """Tree of DeviceRecords; `enqueue` from any thread, `flush` on the GUI thread (a timer).
    `events` carries, per flush, the transitions worth telling the operator (app.analysis.fleet_events);
    an alarm's cause and diagnosis follow from a worker (app.ui.alarm_followup): loading a model into an
    interpreter is not the GUI thread's job (`alarm_cause` may still be set to a cheap CauseFn)."""

    events = Signal(list)
    repaint = Signal()
    restructured = Signal()  # after a flush that added, removed or re-stated devices (filters redo)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._root = Node("root", "")
        self._devices: dict[str, Node] = {}
        self._lock = threading.Lock()
        self._pending: dict[str, object] = {}
        self._removed: set[str] = set()
        self._deploying: set[str] = set()
        self._gone: dict[str, object] = {}  # last record of a device removed from the tree (moved)
        self.zones = ZoneCache()  # the velocity column
        self.alarm_cause: CauseFn | None = None
        self.flushes = 0
        self.applied = 0
        self._quiet = False  # inside a model reset: no row signals
        self.membership = 0  # bumped whenever a device is added or removed (the id list changed)
        self.structure = 0  # bumped whenever what filters see changed (membership, state, identity)

    # ------------------------------------------------------------------ feeding

    def enqueue(self, event: str, record) -> None:
        """FleetMonitor listener (any thread): keep only the newest record per device."""
        with self._lock:
            if event == "removed":
                self._removed.add(record.device_id)
                self._pending.pop(record.device_id, None)
            else:
                self._pending[record.device_id] = record
                self._removed.discard(record.device_id)

    def set_deploying(self, device_ids, on: bool) -> None:
        """Mark devices the GUI is deploying to (shown 'deploying' until cleared)."""
        for device_id in device_ids:
            (self._deploying.add if on else self._deploying.discard)(device_id)
            node = self._devices.get(device_id)
            if node is not None:
                mark_dirty(node.parent)
                self._changed([node])
        self.structure += 1
        self.restructured.emit()

    def flush(self) -> int:
        """Apply every pending update; returns how many devices changed.

        Only changes that can move a row or change what filters see (state, alarm, model, identity)
        are announced with dataChanged (per parent, per row range; group rows once each). Plain
        telemetry (score, last seen) is stored quietly and `repaint` asks the view to redraw what
        it shows: with 1,000 devices a QSortFilterProxyModel re-filtering and re-sorting on a
        thousand dataChanged signals four times a second would cost the GUI thread most of its time.
        """
        with self._lock:
            pending, self._pending = self._pending, {}
            removed, self._removed = self._removed, set()
        for device_id in removed:
            self._remove(device_id)
        if removed:
            self.structure += 1
            self.restructured.emit()
        if not pending:
            return 0
        resetting = sum(1 for d in pending if d not in self._devices) > RESET_INSERT_MIN
        if resetting:
            self.beginResetModel()
            self._quiet = True

        changed: list[Node] = []
        quiet = 0
        events: list[tuple[str, str, str]] = []
        new_by_parent: dict[int, tuple[Node, list[Node]]] = {}
        for device_id, record in pending.items():
            node = self._devices.get(device_id)
            if node is not None and (node.record.location != record.location or node.record.site != record.site) \
                    and group_path(node.record) != group_path(record):
                self._remove(device_id)  # moved to another machine: re-insert under its new parent
                node = None
            events.extend(transitions(node.record if node is not None else self._gone.pop(device_id, None),
                                      record, self.alarm_cause))
            if node is None:
                parent = self._ensure_groups(group_path(record))
                node = Node("device", device_id, parent=parent, record=record, hay=search_text(record))
                new_by_parent.setdefault(id(parent), (parent, []))[1].append(node)
                self._devices[device_id] = node
                mark_dirty(parent)
            else:
                deploying = device_id in self._deploying
                structural = _structure(node.record, deploying) != _structure(record, deploying)
                node.record = record
                mark_dirty(node.parent)  # its groups' counts and worst score
                if structural:
                    node.hay = search_text(record)
                    changed.append(node)
                else:
                    quiet += 1
        groups: dict[int, Node] = {}
        for parent, nodes in new_by_parent.values():
            first = len(parent.children)
            if not resetting:
                self.beginInsertRows(self._index_of(parent), first, first + len(nodes) - 1)
            for i, node in enumerate(nodes):
                node.row = first + i
                parent.children.append(node)
            if not resetting:
                self.endInsertRows()
            groups[id(parent)] = parent
        if resetting:
            self._quiet = False
            self.endResetModel()
        else:
            self._changed(changed, groups)
            self._emit_groups(groups)
        appeared = [e for e in events if e[2].startswith("appeared")]
        if len(appeared) > APPEARED_DETAIL_MAX:  # a whole fleet arriving is one line, not a thousand
            events = [e for e in events if not e[2].startswith("appeared")]
            events.insert(0, ("info", "", f"{len(appeared)} devices appeared"))
        self.flushes += 1
        self.applied += len(pending)
        if new_by_parent:
            self.membership += 1
        if new_by_parent or changed:
            self.structure += 1
            self.restructured.emit()
        if quiet:
            self.repaint.emit()
        if events:
            self.events.emit(events)
        return len(pending)

    def refresh_ages(self) -> None:
        """'Last seen' is relative: have the view redraw (it fetches only the rows it shows)."""
        self.repaint.emit()

    def _ensure_groups(self, path: tuple[str, str, str]) -> Node:
        node = self._root
        for kind, name in zip(LEVELS, path, strict=True):
            child = node.by_name.get(name)
            if child is None:
                child = Node(kind, name, parent=node, row=len(node.children))
                if not self._quiet:
                    self.beginInsertRows(self._index_of(node), child.row, child.row)
                node.children.append(child)
                node.by_name[name] = child
                if not self._quiet:
                    self.endInsertRows()
            node = child
        return node

    def _remove(self, device_id: str) -> None:
        node = self._devices.pop(device_id, None)
        if node is None:
            return
        self.membership += 1
        self._gone[device_id] = node.record
        mark_dirty(node.parent)
        while node is not None and node.kind != "root":
            parent = node.parent
            if not self._quiet:
                self.beginRemoveRows(self._index_of(parent), node.row, node.row)
            parent.children.pop(node.row)
            parent.by_name.pop(node.name, None)
            for i, sibling in enumerate(parent.children):
                sibling.row = i
            if not self._quiet:
                self.endRemoveRows()
            node = parent if parent.kind != "root" and not parent.children else None

    def _changed(self, nodes: list[Node], groups: dict[int, Node] | None = None) -> None:
        """dataChanged per parent over the changed rows' range; their groups are collected in
        `groups` (emitted once each by `_emit_groups`), or emitted here when none is given."""
        own = groups is None
        groups = {} if groups is None else groups
        by_parent: dict[int, tuple[Node, list[int]]] = {}
        for node in nodes:
            by_parent.setdefault(id(node.parent), (node.parent, []))[1].append(node.row)
        last = len(COLUMNS) - 1
        for parent, rows in by_parent.values():
            lo, hi = min(rows), max(rows)
            self.dataChanged.emit(self.createIndex(lo, 0, parent.children[lo]),
                                  self.createIndex(hi, last, parent.children[hi]))
            groups[id(parent)] = parent
        if own:
            self._emit_groups(groups)

    def _emit_groups(self, groups: dict[int, Node]) -> None:
        """Group rows (their online/alarm counts) above the given nodes, each ancestor once."""
        seen: set[int] = set()
        for node in groups.values():
            while node is not None and node.kind != "root" and id(node) not in seen:
                seen.add(id(node))
                self.dataChanged.emit(self.createIndex(node.row, 0, node),
                                      self.createIndex(node.row, len(COLUMNS) - 1, node))
                node = node.parent

    # ------------------------------------------------------------------ queries

    def device_ids(self) -> list[str]:
        return sorted(self._devices)

    @property
    def root(self) -> Node:
        """The tree's root node (sites are its children): filters walk it without Qt calls."""
        return self._root

    def device_nodes(self):
        """Every device's node (any order)."""
        return self._devices.values()

    def deploying(self, device_id: str) -> bool:
        return device_id in self._deploying

    def record(self, device_id: str):
        node = self._devices.get(device_id)
        return node.record if node else None

    def index_of_device(self, device_id: str, column: int = 0) -> QModelIndex:
        node = self._devices.get(device_id)
        return self.createIndex(node.row, column, node) if node else QModelIndex()

    def status(self, device_id: str) -> str | None:
        node = self._devices.get(device_id)
        return status_of(node.record, device_id in self._deploying) if node else None

    def counts(self) -> dict[str, int]:
        """Devices per status (the status bar's line each second), from the root's kept figures."""
        return {**dict.fromkeys(STATUSES, 0), **self._stats(self._root).statuses}

    def online_on(self, transport: str) -> int:
        """Devices not offline that reached us over `transport` ("serial", "mqtt")."""
        return self._stats(self._root).transports.get(transport, 0)

    def _stats(self, node: Node) -> GroupStats:
        return group_stats(node, lambda n: status_of(n.record, n.name in self._deploying))

    # ------------------------------------------------------------------ QAbstractItemModel

    def _node(self, index: QModelIndex | QPersistentModelIndex) -> Node:
        return index.internalPointer() if index.isValid() else self._root

    def _index_of(self, node: Node) -> QModelIndex:
        return QModelIndex() if node.kind == "root" else self.createIndex(node.row, 0, node)

    def index(self, row: int, column: int, parent=QModelIndex()) -> QModelIndex:
        node = self._node(parent)
        if 0 <= row < len(node.children) and 0 <= column < len(COLUMNS):
            return self.createIndex(row, column, node.children[row])
        return QModelIndex()

    def parent(self, index=QModelIndex()):  # type: ignore[override]
        if not index.isValid():
            return QModelIndex()
        node = index.internalPointer()
        return self._index_of(node.parent) if node.parent is not None else QModelIndex()

    def rowCount(self, parent=QModelIndex()) -> int:
        if parent.isValid() and parent.column() != 0:
            return 0
        return len(self._node(parent).children)

    def columnCount(self, parent=QModelIndex()) -> int:
        return len(COLUMNS)

    def headerData(self, section: int, orientation, role=Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def flags(self, index):
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable if index.isValid() else Qt.ItemFlag.NoItemFlags

    def _group_summary(self, node: Node) -> tuple[int, int, int]:
        """(devices, online, alarms) below a group node."""
        stats = self._stats(node)
        return stats.total, stats.online, stats.alarms

    def _worst_ratio(self, node: Node) -> tuple[float, str] | None:
        """(score / threshold, device id) of the worst online device below a group node."""
        return self._stats(node).worst

    def set_machine_classes(self, classes: dict[str, str] | None) -> None:
        """ISO class per device for the velocity column's zone (None: reload from the store)."""
        self.zones.set_classes(classes)
        if self._devices:
            self.dataChanged.emit(self.index(0, COL_VELOCITY), self.index(self.rowCount() - 1, COL_VELOCITY))

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        node: Node = index.internalPointer()
        col = index.column()
        if role == KIND_ROLE:
            return node.kind
        if node.kind != "device":
            return self._group_data(node, col, role)
        rec = node.record
        if col == COL_VELOCITY:
            return self._velocity_data(rec, role)
        status = status_of(rec, node.name in self._deploying)
        if role == Qt.ItemDataRole.DisplayRole:
            return self._device_text(rec, status, col)
        if role == DEVICE_ID_ROLE:
            return rec.device_id
        if role == STATUS_ROLE:
            return status
        if role == RECORD_ROLE:
            return rec
        if role == SORT_ROLE:
            if col == COL_SCORE:
                return -1.0 if rec.score is None else float(rec.score) / float(rec.threshold or 1.0)
            if col == COL_SEEN:
                return float(rec.last_seen)
            if col == COL_MODEL:
                return f"{rec.model_name}@{rec.model_version:06d}"
            if col == COL_STATUS:
                return STATUSES.index(status)
            return self._device_text(rec, status, col) or ""
        if role == Qt.ItemDataRole.ForegroundRole:
            if col == COL_STATUS:
                return QBrush(QColor(STATUS_COLORS[status]))
            if col == COL_SCORE:
                level = score_level(rec.score, rec.threshold)
                return QBrush(QColor(SCORE_COLORS[level])) if level else None
            if status == OFFLINE:
                return QBrush(QColor(STATUS_COLORS[OFFLINE]))
        if role == Qt.ItemDataRole.FontRole and col in (COL_STATUS, COL_SCORE):
            from PySide6.QtGui import QFont

            font = QFont()
            font.setBold(status == "alarm" or (col == COL_SCORE and score_level(rec.score, rec.threshold) == "alarm"))
            return font
        if role == Qt.ItemDataRole.ToolTipRole:
            return device_tooltip(rec, status)
        if role == Qt.ItemDataRole.TextAlignmentRole and col == COL_SCORE:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def _velocity_data(self, rec, role):
        zone = self.zones.zone(rec)
        if role == Qt.ItemDataRole.DisplayRole:
            return "-" if zone is None else f"{zone.velocity_mm_s:.2f} {zone.zone}"
        if role == SORT_ROLE:
            return -1.0 if zone is None else zone.velocity_mm_s
        if role == DEVICE_ID_ROLE:
            return rec.device_id
        if role == RECORD_ROLE:
            return rec
        if zone is None:
            return None
        if role == Qt.ItemDataRole.BackgroundRole:
            return QBrush(QColor(zone.colour))
        if role == Qt.ItemDataRole.ToolTipRole:
            return (f"overall velocity {zone.velocity_mm_s:.2f} mm/s RMS (10-1000 Hz, estimated from the last "
                    f"telemetry's band energies): zone {zone.zone}, {zone.meaning} ({zone.machine_class})")
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    @staticmethod
    def _device_text(rec, status: str, col: int) -> str | None:
        if col == COL_NAME:
            return rec.device_id
        if col == COL_STATUS:
            return status + (" (trial)" if rec.trial and status != OFFLINE else "")
        if col == COL_PROFILE:
            return rec.profile
        if col == COL_FIRMWARE:
            return rec.firmware
        if col == COL_MODEL:
            return f"{rec.model_name}@{rec.model_version}" if rec.model_name else ("none" if rec.hello else "")
        if col == COL_SCORE:
            if rec.score is None:
                return "-"
            return f"{num_text(rec.score)} / {num_text(rec.threshold)}" if rec.threshold else num_text(rec.score)
        if col == COL_SEEN:
            return age_text(rec.last_seen)
        if col == COL_TRANSPORT:
            return rec.transport
        return None

    def _group_data(self, node: Node, col: int, role):
        if col == COL_SCORE:
            return self._group_score(node, role)
        if role == Qt.ItemDataRole.DisplayRole:
            if col == COL_NAME:
                return node.name
            total, online, alarms = self._group_summary(node)
            if col == COL_STATUS:
                return f"{online}/{total} online" + (f", {alarms} alarm{'s' if alarms != 1 else ''}" if alarms else "")
            return None
        if role == Qt.ItemDataRole.ForegroundRole and col == COL_STATUS:
            total, online, alarms = self._group_summary(node)
            key = ALARM if alarms else OFFLINE if online < total else ONLINE
            return QBrush(QColor(STATUS_COLORS[key]))
        if role == SORT_ROLE:
            return node.name
        if role == Qt.ItemDataRole.ToolTipRole:
            total, online, alarms = self._group_summary(node)
            return f"{node.kind} {node.name}: {total} devices, {online} online, {alarms} in alarm"
        return None

    def _group_score(self, node: Node, role):
        """A group's Score cell: its worst device's score as a multiple of that device's threshold."""
        worst = self._worst_ratio(node)
        if role == SORT_ROLE:
            return -1.0 if worst is None else worst[0]
        if worst is None:
            return None
        ratio, device_id = worst
        level = "alarm" if ratio > 1.0 else "warn" if ratio > SCORE_WARN_RATIO else "ok"
        if role == Qt.ItemDataRole.DisplayRole:
            return f"worst {ratio_text(ratio)}× thr"
        if role == Qt.ItemDataRole.ForegroundRole:  # quiet grey unless something needs a look
            return QBrush(QColor(SCORE_COLORS[level] if level != "ok" else STATUS_COLORS[OFFLINE]))
        if role == Qt.ItemDataRole.FontRole:
            from PySide6.QtGui import QFont

            font = QFont()
            font.setBold(level == "alarm")
            return font
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole:
            return (f"Highest anomaly score in {node.kind} {node.name}: {device_id} at {ratio_text(ratio)} times "
                    "its threshold (above 1 is an alarm)")
        return None
