"""Edit the description of the machine a device is mounted on (shaft speed, bearing, ISO class):
the GUI side of `tinymlops machine set`, writing the same SQLite rows."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
)

from app.analysis.bearings import CATALOGUE, parse_bearing
from app.analysis.machines import SHAFT_HZ_RANGE, Machine, MachineStore
from app.domain.errors import DataError

NO_BEARING = "(not given)"
GROUPS = (("small machine < 15 kW (ISO 10816-1 class I)", None), ("group 2: 15-300 kW (ISO 20816-3)", 2),
          ("group 1: 300 kW-50 MW (ISO 20816-3)", 1))


class MachineDialog(QDialog):
    """Shows `device_id`'s machine (or an empty one); `saved` holds the stored Machine after OK."""

    def __init__(self, device_id: str, shaft_hint: float | None = None, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Machine of {device_id}")
        self.device_id = device_id
        self.saved: Machine | None = None
        with MachineStore() as store:
            current = store.find(device_id) or Machine(device_id)
        form = QFormLayout(self)
        self.name = QLineEdit(current.name)
        self.name.setPlaceholderText("e.g. cooling pump P-101")
        form.addRow("Name", self.name)
        self.shaft = QDoubleSpinBox()
        self.shaft.setRange(0.0, SHAFT_HZ_RANGE[1])
        self.shaft.setDecimals(2)
        self.shaft.setSuffix(" Hz")
        self.shaft.setSpecialValueText("not given")
        self.shaft.setValue(current.shaft_hz or shaft_hint or 0.0)
        self.shaft.setToolTip("Nominal shaft speed (rpm / 60); the analysis finds the real speed near it")
        form.addRow("Shaft speed", self.shaft)
        self.bearing = QComboBox()
        self.bearing.setEditable(True)
        self.bearing.addItems([NO_BEARING, *CATALOGUE])
        self.bearing.setToolTip("A catalogue bearing, or type the geometry: n=9,d=7.94,D=39.04,angle=0")
        if current.bearing is not None:
            b = current.bearing
            self.bearing.setCurrentText(b.name or f"n={b.n_balls},d={b.ball_diameter_mm:g},"
                                        f"D={b.pitch_diameter_mm:g},angle={b.contact_angle_deg:g}")
        form.addRow("Bearing", self.bearing)
        self.group = QComboBox()
        for text, value in GROUPS:
            self.group.addItem(text, value)
        self.group.setCurrentIndex(max(0, self.group.findData(current.iso_group)))
        form.addRow("ISO class", self.group)
        self.foundation = QComboBox()
        self.foundation.addItems(["rigid", "flexible"])
        self.foundation.setCurrentText(current.foundation or "rigid")
        form.addRow("Foundation", self.foundation)
        self.group.currentIndexChanged.connect(self._group_changed)
        self._group_changed()
        self.error = QLabel("")
        self.error.setStyleSheet("color: #c62828")
        self.error.setWordWrap(True)
        form.addRow(self.error)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _group_changed(self) -> None:
        self.foundation.setEnabled(self.group.currentData() is not None)

    def changes(self) -> dict:
        """The form as MachineStore.update arguments; DataError names a bad field."""
        text = self.bearing.currentText().strip()
        group = self.group.currentData()
        return {"name": self.name.text().strip(), "shaft_hz": self.shaft.value() or None,
                "bearing": None if text in ("", NO_BEARING) else parse_bearing(text),
                "iso_group": group, "foundation": self.foundation.currentText() if group else None}

    def accept(self) -> None:
        try:
            with MachineStore() as store:
                self.saved = store.update(self.device_id, **self.changes())
        except DataError as exc:  # the form stays open with what was typed, the problem under it
            self.error.setText(str(exc))
            return
        super().accept()
