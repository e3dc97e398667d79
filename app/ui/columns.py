"""Show/hide table and tree columns from the header's context menu (right-click a header).

Views beside the fleet share a ~800 px wide page: they hide their less used columns by default
(the same values are in the selected item's card or tooltip) and the operator brings them back
here. QHeaderView.saveState() keeps the choice where a view saves its header."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHeaderView, QMenu


def column_menu(header: QHeaderView, names: Sequence[str]) -> QMenu:
    """One checkable action per column; the first column (the item's name) always stays."""
    menu = QMenu(header)
    for col, name in enumerate(names):
        action = menu.addAction(name)
        action.setObjectName(f"column-{col}")
        action.setCheckable(True)
        action.setChecked(not header.isSectionHidden(col))
        action.setEnabled(col != 0)
        action.toggled.connect(lambda on, col=col: header.setSectionHidden(col, not on))
    return menu


def install_column_menu(header: QHeaderView, names: Sequence[str], hidden: Sequence[int] = ()) -> None:
    """Hide the `hidden` columns now and let a right-click on the header show or hide any column."""
    for col in hidden:
        header.setSectionHidden(col, True)
    header.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
    header.setToolTip("Right-click to show or hide columns")
    header.customContextMenuRequested.connect(
        lambda pos: column_menu(header, names).exec(header.mapToGlobal(pos)))
