"""Search and state filter over the fleet tree (FleetModel), answered in one pass of plain Python.

Qt's recursive proxy filtering asks `filterAcceptsRow` of every row of the tree, a call from C++
into Python each: ~0.3 s per keystroke with 10,000 devices. Here the filter works out, once per
change, which nodes stay (matching devices, their groups, and every device of a group whose name
matches) as a set of node ids straight from the model's tree, and `filterAcceptsRow` is one set
lookup. The proxy maps a parent's rows only when the view opens it, so with groups collapsed a
search touches the few rows on screen, not the fleet.
"""

from __future__ import annotations

from PySide6.QtCore import QSortFilterProxyModel

from app.ui.fleet_model import SORT_ROLE, FleetModel, Node, status_of


class FleetFilter(QSortFilterProxyModel):
    """Text search over id, location, profile, firmware, model, transport (groups match by name,
    and then show all their devices), plus a status filter applied to devices only."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setSortRole(SORT_ROLE)
        self.setDynamicSortFilter(True)
        self._text = ""
        self._status = ""
        # ids of the nodes shown (None: no filter, all shown); until the view's next `refilter` a
        # device that appeared or changed state is judged by the set computed before it
        self._kept: set[int] | None = None

    @property
    def active(self) -> bool:
        return bool(self._text or self._status)

    def set_text(self, text: str) -> None:
        self._apply(text.strip().lower(), self._status)

    def set_status(self, status: str) -> None:
        """'' for all, else one of STATUSES."""
        self._apply(self._text, status)

    def refilter(self) -> None:
        """The fleet changed (devices added, removed, re-stated): recompute what a filter keeps."""
        if self.active:
            self._apply(self._text, self._status)

    def _apply(self, text: str, status: str) -> None:
        self.beginFilterChange()
        self._text, self._status = text, status
        self._kept = self._compute() if self.active else None
        self.endFilterChange()

    def matches(self) -> int:
        """How many devices the filter shows (all of them when no filter is set)."""
        model: FleetModel = self.sourceModel()
        if self._kept is None:
            return len(model.device_nodes())
        return sum(1 for node in model.device_nodes() if id(node) in self._kept)

    def _compute(self) -> set[int]:
        model: FleetModel = self.sourceModel()
        text, status = self._text, self._status
        kept: set[int] = set()

        def keep_path(node: Node | None) -> None:
            while node is not None and node.kind != "root" and id(node) not in kept:
                kept.add(id(node))
                node = node.parent

        def keep_all(node: Node) -> None:
            stack = [node]
            while stack:
                n = stack.pop()
                if n.kind == "device":
                    if not status or status_of(n.record, model.deploying(n.name)) == status:
                        keep_path(n)
                else:
                    stack.extend(n.children)

        if text and not status:  # a site, line or machine whose name matches shows all its devices
            stack = list(model.root.children)
            while stack:
                n = stack.pop()
                if n.kind == "device":
                    continue
                if text in n.name.lower():
                    keep_path(n)
                    keep_all(n)
                else:
                    stack.extend(n.children)
        for node in model.device_nodes():
            if text and text not in node.hay:
                continue
            if status and status_of(node.record, model.deploying(node.name)) != status:
                continue
            keep_path(node)
        return kept

    def filterAcceptsRow(self, row: int, parent) -> bool:
        if self._kept is None:
            return True
        model: FleetModel = self.sourceModel()
        owner: Node = parent.internalPointer() if parent.isValid() else model.root
        return 0 <= row < len(owner.children) and id(owner.children[row]) in self._kept
