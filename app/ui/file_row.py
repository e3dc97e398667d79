"""A line edit with a Browse… button beside it: the one way the dialogs ask for a file or folder."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import QHBoxLayout, QLineEdit, QPushButton, QWidget


def with_browse(edit: QLineEdit, browse: Callable[..., None]) -> QWidget:
    """`edit` and a Browse… button calling `browse`, as one form row."""
    box = QWidget()
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    button = QPushButton("Browse…")
    button.clicked.connect(browse)
    row.addWidget(edit, 1)
    row.addWidget(button)
    return box
