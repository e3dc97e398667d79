"""The window's layout between runs (QSettings): geometry, dock layout, the fleet's column widths
and the open tab. Unreadable or absent values leave the default layout."""

from __future__ import annotations

from PySide6.QtCore import QByteArray
from PySide6.QtWidgets import QMainWindow, QTabWidget

from app.ui.fleet_view import FleetView
from app.ui.settings import qsettings


def restore(window: QMainWindow, fleet_view: FleetView, tabs: QTabWidget) -> bool:
    """Restore the last session's layout; True if there was one (else the caller sizes the docks)."""
    s = qsettings()
    geometry = s.value("window/geometry")
    state = s.value("window/state")
    if isinstance(geometry, QByteArray | bytes):
        window.restoreGeometry(geometry)
    if isinstance(state, QByteArray | bytes):
        window.restoreState(state)
    header = s.value("fleet/header")
    if isinstance(header, QByteArray | bytes):
        fleet_view.tree.header().restoreState(header)
        fleet_view.auto_size_columns = False  # the user's own column widths
    tab = s.value("window/tab")
    if tab is not None:
        try:
            tabs.setCurrentIndex(int(tab))
        except (TypeError, ValueError):
            pass
    return isinstance(state, QByteArray | bytes)


def save(window: QMainWindow, fleet_view: FleetView, tabs: QTabWidget) -> None:
    s = qsettings()
    s.setValue("window/geometry", window.saveGeometry())
    s.setValue("window/state", window.saveState())
    s.setValue("fleet/header", fleet_view.tree.header().saveState())
    s.setValue("window/tab", tabs.currentIndex())
    s.sync()
