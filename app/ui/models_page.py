"""Models page: the registry as a table, a model card for the selection, datasets, and the
pipeline's actions (record data from a device, train + convert, import, check with TFLM, export),
each in a worker with a progress bar and a cancel button. TensorFlow is imported only inside the
training/import jobs, never by this module."""

from __future__ import annotations

import html
import logging
import time
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableView,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from app.domain.errors import Cancelled
from app.ui import workers
from app.ui.columns import install_column_menu
from app.ui.context import PageContext
from app.ui.jobs import check_job, export_job, import_job, record_job, train_job
from app.ui.progress import Progress
from app.ui.table_model import ItemTableModel

log = logging.getLogger(__name__)

COLUMNS = ("Family", "Version", "Kind", "Image", "Arena", "Quantisation", "Threshold", "Metrics", "Created")
# Hidden until the operator shows them (right-click the header): the selected version's card has
# them (arena in its fit table), and without them the registry's other columns fit beside the card
# on the ~800 px page next to the fleet.
HIDDEN_COLUMNS = tuple(COLUMNS.index(c) for c in ("Arena", "Quantisation", "Threshold", "Created"))
# Registry + datasets | model card, in px of that page (scaled to the real width): the card's fit
# table needs ~370 px to keep profile names such as "qemu-mps2-an386" on one line.
SPLIT_SIZES = (380, 400)
# Default training budget from the GUI: early stopping usually ends well before.
DEFAULT_EPOCHS = 60


def _kb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024:.1f} KB"


def _pair(used: int | None, available: int | None) -> str:
    """'11.5 / 512': what the model needs against what the device has, in KB (the header says so)."""
    if used is None or available is None:
        return "-"
    return f"{used / 1024:.1f} / {available / 1024:.0f}"


def metrics_text(mv) -> str:
    m = mv.metrics or {}
    parts = []
    if "auc" in m:
        parts.append(f"AUC {m['auc']:.3f}")
    far = m.get("false_alarm_rate", m.get("false_alarm_rate_calibration"))  # older cards: calibration only
    if "false_alarm_rate_n" in m:  # with its evidence: 0/14 is not a 0 % rate (app.ml.intervals)
        parts.append(f"FAR {m['false_alarm_rate_count']}/{m['false_alarm_rate_n']} "
                     f"(95 % CI up to {m['false_alarm_rate_ci95'][1]:.1%})")
    elif far is not None:
        parts.append(f"FAR {far:.1%}")
    if "recall" in m:
        parts.append(f"recall {m['recall']:.2f}")
    return ", ".join(parts) or "-"


class RegistryModel(ItemTableModel):
    """The model registry's versions (ModelVersion per row)."""

    def __init__(self, parent=None) -> None:
        super().__init__(COLUMNS, parent)

    def cell(self, mv, column: int, role: int):
        if role == Qt.ItemDataRole.DisplayRole:
            return (mv.name, str(mv.version), "deployable" if mv.deployable else "check-only", _kb(mv.image_size),
                    _kb(mv.arena), mv.quantization, "-" if mv.threshold is None else f"{mv.threshold:.4f}",
                    metrics_text(mv), time.strftime("%Y-%m-%d %H:%M", time.localtime(mv.created)))[column]
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{mv.ref} sha256 {mv.sha256[:16]}… parent {mv.parent or '-'}"
        return None


def card_html(mv) -> str:
    """The model card: identity, sizes, metrics, int8-vs-float, fit per hardware profile."""
    card = mv.card or {}
    e = html.escape
    out = [f"<h3>{e(mv.ref)} <small>({'deployable' if mv.deployable else 'check-only'})</small></h3>",
           f"<p>created {time.strftime('%Y-%m-%d %H:%M', time.localtime(mv.created))}, parent {e(mv.parent or '-')}, "
           f"datasets {e(mv.dataset or '-')}<br>image {mv.image_size} B, TFLite {mv.tflite_size} B, arena "
           f"{mv.arena} B, ops {e(', '.join(mv.ops))}"
           + (f"<br>threshold {mv.threshold:.5f}" if mv.threshold is not None else "") + "</p>"]
    if mv.metrics:
        from app.ml.metrics import describe_rate

        rates = [k for k in mv.metrics if f"{k}_count" in mv.metrics]  # shown with count and interval
        detail = {f"{r}_{x}" for r in rates for x in ("count", "n", "ci95")}
        rows = "".join(f"<tr><td>{e(k)}</td><td align=right>{e(describe_rate(mv.metrics, k))}</td></tr>" if k in rates
                       else f"<tr><td>{e(k)}</td><td align=right>{v:.4g}</td></tr>" if isinstance(v, float)
                       else f"<tr><td>{e(k)}</td><td align=right>{e(str(v))}</td></tr>"
                       for k, v in mv.metrics.items() if k not in detail)
        out.append(f"<h4>Metrics</h4><table cellspacing=2>{rows}</table>")
    for warning in card.get("warnings", []):
        out.append(f"<p style='color:#e65100'>{e(warning)}</p>")
    conv = card.get("conversion", {})
    agree = conv.get("int8_vs_float") or {}
    if agree or conv.get("sizes"):
        rows = "".join(f"<tr><td>{e(k)}</td><td align=right>{v:.4f}</td></tr>" for k, v in agree.items()
                       if isinstance(v, int | float))
        sizes = ", ".join(f"{e(k)} {v} B" for k, v in (conv.get("sizes") or {}).items())
        out.append(f"<h4>int8 vs float</h4><table cellspacing=2>{rows}</table>"
                   + (f"<p>sizes: {sizes}</p>" if sizes else ""))
    if mv.fit:
        rows = []
        # the "why not" column only when a profile does not fit: a narrow card keeps profile names whole
        any_misfit = any(not f.get("fits") for f in mv.fit.values())
        for key, f in mv.fit.items():
            color = "#2e7d32" if f.get("fits") else "#c62828"
            why = "; ".join(f.get("reasons") or []) or ""
            verdict = "fits" if f.get("fits") else "no"
            name = e(key).replace("-", "&#8209;")  # non-breaking hyphens: "esp32-wroom-32" stays on one line
            rows.append(f"<tr><td nowrap>{name}</td><td style='color:{color}'><b>{verdict}</b></td>"
                        f"<td nowrap align=right>{_pair(f.get('image_size'), f.get('slot_size'))}</td>"
                        f"<td nowrap align=right>{_pair(f.get('arena'), f.get('arena_budget'))}</td>"
                        + (f"<td>{e(why)}</td>" if any_misfit else "") + "</tr>")
        out.append("<h4>Fit per hardware profile</h4><table cellspacing=3 border=0>"
                   "<tr><th align=left>profile</th><th></th><th nowrap>image/slot KB</th>"
                   "<th nowrap>arena/budget KB</th>" + ("<th align=left>why not</th>" if any_misfit else "")
                   + "</tr>" + "".join(rows) + "</table>")
    if mv.notes:
        out.append(f"<p><i>{e(mv.notes)}</i></p>")
    return "".join(out)


class ModelsPage(QWidget):
    def __init__(self, context: PageContext) -> None:
        super().__init__()
        self.ctx = context
        self.worker: workers.Worker | None = None
        self.selected_devices: list[str] = []
        self.registry_model = RegistryModel(self)
        self.table = QTableView()
        self.table.setModel(self.registry_model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        install_column_menu(self.table.horizontalHeader(), COLUMNS, HIDDEN_COLUMNS)
        self.table.setWordWrap(False)  # one line per version: "AUC 0.998, FAR 0.0%" is not broken up
        self.table.selectionModel().selectionChanged.connect(self._version_selected)
        self.card = QTextBrowser()
        self.card.setHtml("<p style='color:#777'>Select a model version to see its card.</p>")

        self.datasets = QTableWidget(0, 5)
        self.datasets.setHorizontalHeaderLabels(["Dataset", "Label", "Windows", "Seconds", "Source"])
        self.datasets.verticalHeader().hide()
        self.datasets.horizontalHeader().setStretchLastSection(True)
        self.datasets.setToolTip("Tick the datasets to train on (normal) or to measure detection with (fault)")
        self.datasets.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)

        # actions
        self.record_seconds = QDoubleSpinBox()
        self.record_seconds.setRange(3.0, 3600.0)
        self.record_seconds.setValue(15.0)
        self.record_seconds.setSuffix(" s")
        self.record_seconds.setToolTip("Recording length (a dataset needs at least 8 windows, 2.6 s; "
                                       "training needs 40 normal windows, ~13 s)")
        self.record_label = QComboBox()
        self.record_label.addItems(["normal", "fault"])
        self.record_button = QPushButton("Record from device")
        self.record_button.setToolTip("Record raw vibration from the device selected in the fleet")
        self.record_button.clicked.connect(self.record_selected)
        self.family = QLineEdit("pump-ae")
        self.family.setToolTip("Model family: the new version is numbered within it")
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 1000)
        self.epochs.setValue(DEFAULT_EPOCHS)
        self.epochs.setToolTip("Maximum epochs (early stopping usually ends sooner)")
        self.train_button = QPushButton("Train && convert")
        self.train_button.setToolTip("Train an autoencoder on the ticked normal datasets, convert it to int8, "
                                     "calibrate its threshold with TFLM and register it")
        self.train_button.clicked.connect(self.train_checked)
        self.import_button = QPushButton("Import model…")
        self.import_button.setToolTip("Import a .tmlm, int8 .tflite, .keras/.h5 or SavedModel (converted and "
                                      "calibrated on the ticked normal datasets)")
        self.import_button.clicked.connect(self._import_dialog)
        self.check_button = QPushButton("Check fit (TFLM)")
        self.check_button.setToolTip("Re-measure ops and arena with the real TFLM interpreter and show the fit table")
        self.check_button.clicked.connect(self.check_selected)
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Write .tflite, .tmlm, manifest and a C header to a folder")
        self.export_button.clicked.connect(self._export_dialog)
        self.deploy_button = QPushButton("Deploy…")
        self.deploy_button.setToolTip("Open the deploy wizard with this version and the fleet selection")
        self.deploy_button.clicked.connect(self._deploy)

        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.job_label = QLabel("")
        self.job_label.setWordWrap(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running job at its next step; nothing half-done is stored")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)

        record_box = QGroupBox("Data")
        r = QHBoxLayout(record_box)
        self.record_target = QLabel("device: (select one in the fleet)")
        r.addWidget(self.record_target, 1)
        r.addWidget(self.record_seconds)
        r.addWidget(self.record_label)
        r.addWidget(self.record_button)
        train_box = QGroupBox("Model")
        t = QVBoxLayout(train_box)
        row1, row2 = QHBoxLayout(), QHBoxLayout()
        row1.addWidget(QLabel("family"))
        row1.addWidget(self.family, 1)
        row1.addWidget(QLabel("epochs"))
        row1.addWidget(self.epochs)
        row1.addWidget(self.train_button)
        for b in (self.import_button, self.check_button, self.export_button, self.deploy_button):
            row2.addWidget(b)
        row2.addStretch(1)
        t.addLayout(row1)
        t.addLayout(row2)
        job = QHBoxLayout()
        job.addWidget(self.progress, 1)
        job.addWidget(self.cancel_button)

        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        lv.addWidget(QLabel("<b>Registry</b>"))
        lv.addWidget(self.table, 3)
        lv.addWidget(QLabel("<b>Datasets</b> (tick to train on)"))
        lv.addWidget(self.datasets, 2)
        split = QSplitter()
        split.addWidget(left)
        split.addWidget(self.card)
        # the registry's default columns beside the card's fit table (~360 px, profile names whole)
        split.setSizes(list(SPLIT_SIZES))
        layout = QVBoxLayout(self)
        layout.addWidget(split, 1)
        layout.addWidget(record_box)
        layout.addWidget(train_box)
        layout.addLayout(job)
        layout.addWidget(self.job_label)

    # ------------------------------------------------------------------ data

    def refresh(self) -> None:
        """Reload registry and datasets (cheap SQLite reads)."""
        from app.domain.errors import TinyMLOpsError
        from app.ml.datasets import DatasetStore
        from app.ml.registry import Registry

        current = self.current_version()
        try:
            with Registry() as reg:
                versions = reg.list()
            with DatasetStore() as store:
                datasets = store.list()
        except (TinyMLOpsError, OSError) as exc:
            self.job_label.setText("<span style='color:#c62828'>cannot read the registry: "
                                   f"{html.escape(str(exc))}</span>")
            return
        self.registry_model.set_items(versions)
        if current is not None:
            self.select_version(current.ref)
        checked = set(self.checked_datasets("normal") + self.checked_datasets("fault"))
        self.datasets.setRowCount(len(datasets))
        for row, ds in enumerate(datasets):
            item = QTableWidgetItem(ds.id)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if ds.id in checked else Qt.CheckState.Unchecked)
            item.setData(Qt.ItemDataRole.UserRole, ds.label)
            self.datasets.setItem(row, 0, item)
            cells = (ds.label, str(ds.windows), f"{ds.n_samples / ds.sample_rate:.1f}", ds.source)
            for col, text in enumerate(cells, 1):
                self.datasets.setItem(row, col, QTableWidgetItem(text))
        self.datasets.resizeColumnsToContents()

    def checked_datasets(self, label: str) -> list[str]:
        out = []
        for row in range(self.datasets.rowCount()):
            item = self.datasets.item(row, 0)
            if item and item.checkState() == Qt.CheckState.Checked and item.data(Qt.ItemDataRole.UserRole) == label:
                out.append(item.text())
        return out

    def set_dataset_checked(self, dataset_id: str, on: bool = True) -> None:
        for row in range(self.datasets.rowCount()):
            item = self.datasets.item(row, 0)
            if item and item.text() == dataset_id:
                item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)

    def current_version(self):
        rows = self.table.selectionModel().selectedRows()
        return self.registry_model.items[rows[0].row()] if rows else None

    def select_version(self, ref: str) -> bool:
        for row, mv in enumerate(self.registry_model.items):
            if mv.ref == ref:
                self.table.selectRow(row)
                return True
        return False

    def _version_selected(self, *_args) -> None:
        mv = self.current_version()
        self.card.setHtml(card_html(mv) if mv else "")

    def selection_changed(self, device_ids: list[str]) -> None:
        self.selected_devices = list(device_ids)
        self.record_target.setText(f"device: <b>{device_ids[0]}</b>" if device_ids
                                   else "device: (select one in the fleet)")

    def session_changed(self) -> None:
        self.refresh()

    # ------------------------------------------------------------------ jobs

    def _run(self, label: str, fn, *args, on_result=None, process: bool = False,
             cancellable: bool = True) -> workers.Worker | None:
        """`cancellable=False` for a job that has no step to stop at (a fit check, an export take
        seconds): its Cancel button stays disabled rather than promise what it cannot do."""
        if self.worker is not None and not self.worker.done:
            self.job_label.setText("another job is running: wait for it or cancel it")
            return None
        self.progress.setValue(0)
        self.job_label.setText(f"{label}…")
        self.cancel_button.setEnabled(cancellable)
        for b in (self.record_button, self.train_button, self.import_button, self.check_button):
            b.setEnabled(False)

        def progress(step: Progress) -> None:
            self.progress.setValue(step.percent)
            self.job_label.setText(step.text)

        def error(exc: BaseException) -> None:
            message = workers.error_text(exc)
            self.job_label.setText(f"<span style='color:#c62828'>{html.escape(label)} failed: "
                                   f"{html.escape(message)}</span>")
            self.ctx.notify("warning" if isinstance(exc, Cancelled) else "error", "",
                                         f"{label} failed: {message}")

        def result(value) -> None:
            self.progress.setValue(100)
            if on_result:
                on_result(value)

        def finished() -> None:
            self.cancel_button.setEnabled(False)
            for b in (self.record_button, self.train_button, self.import_button, self.check_button):
                b.setEnabled(True)

        runner = workers.run_in_process if process else workers.run_in_thread
        self.worker = runner(fn, *args, name=label, on_progress=progress, on_error=error, on_result=result,
                             on_finished=finished)
        self.ctx.track_job(self.worker, label)
        return self.worker

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            self.job_label.setText("cancelling…")

    def record_selected(self, seconds: float | None = None, label: str | None = None) -> workers.Worker | None:
        session = self.ctx.session()
        if not self.selected_devices:
            self.job_label.setText("select a device in the fleet to record from")
            return None
        if session is None:
            self.job_label.setText("not connected: recording needs the broker")
            return None
        device_id = self.selected_devices[0]
        seconds = float(seconds if seconds is not None else self.record_seconds.value())
        label = label or self.record_label.currentText()

        def done(ds) -> None:
            self.job_label.setText(f"recorded dataset {ds.id}: {ds.windows} windows ({label}) from {device_id}")
            self.ctx.notify("ok", device_id, f"recorded dataset {ds.id} ({ds.windows} windows, {label})")
            self.refresh()
            self.set_dataset_checked(ds.id)

        return self._run(f"record {device_id}", record_job, session.monitor, device_id, seconds, label,
                         on_result=done)

    def train_checked(self, name: str | None = None, epochs: int | None = None,
                      hidden: tuple[int, ...] | None = None) -> workers.Worker | None:
        """Train on the ticked datasets in a child process; `hidden`: layer sizes (default architecture)."""
        data = self.checked_datasets("normal")
        if not data:
            self.job_label.setText("tick at least one normal dataset to train on (record or import one first)")
            return None
        name = (name or self.family.text()).strip()
        epochs = int(epochs or self.epochs.value())

        def done(mv) -> None:
            self.job_label.setText(f"registered {mv.ref}: threshold {mv.threshold:.4f}, image {mv.image_size} B, "
                                   f"arena {mv.arena} B")
            self.ctx.notify("ok", "", f"trained and converted {mv.ref}")
            self.refresh()
            self.select_version(mv.ref)

        return self._run(f"train {name}", train_job, data, self.checked_datasets("fault"), name, epochs, hidden,
                         on_result=done, process=True)

    def import_file(self, path: str, name: str | None = None) -> workers.Worker | None:
        name = (name or self.family.text()).strip()

        def done(mv) -> None:
            self.job_label.setText(f"imported {Path(path).name} as {mv.ref}")
            self.ctx.notify("ok", "", f"imported {mv.ref}")
            self.refresh()
            self.select_version(mv.ref)

        return self._run(f"import {Path(path).name}", import_job, path, name, self.checked_datasets("normal"),
                         on_result=done, process=True)

    def _import_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import a model", "",
                                              "Models (*.tmlm *.tflite *.keras *.h5);;All files (*)")
        if path:
            self.import_file(path)

    def check_selected(self) -> workers.Worker | None:
        mv = self.current_version()
        if mv is None:
            self.job_label.setText("select a model version to check")
            return None

        def done(value) -> None:
            checked_mv, fit, ops, arena = value
            fits = [k for k, f in fit.items() if f["fits"]]
            self.job_label.setText(f"{checked_mv.ref}: measured arena {arena} B, ops {', '.join(ops)}; "
                                   f"fits {', '.join(fits) or 'no profile'}")
            import dataclasses

            self.card.setHtml(card_html(dataclasses.replace(checked_mv, fit=fit, ops=ops, arena=arena)))

        return self._run(f"check {mv.ref}", check_job, mv.ref, on_result=done, cancellable=False)

    def _deploy(self) -> None:
        mv = self.current_version()
        self.ctx.open_deploy_wizard(self.ctx.selected_devices(), source=mv.ref if mv and mv.deployable else None)

    def _export_dialog(self) -> None:
        mv = self.current_version()
        if mv is None:
            self.job_label.setText("select a model version to export")
            return
        out = QFileDialog.getExistingDirectory(self, f"Export {mv.ref} to")
        if out:
            self._run(f"export {mv.ref}", export_job, mv.ref, out,
                      on_result=lambda paths: self.job_label.setText(
                          "wrote " + ", ".join(p.name for p in paths)), cancellable=False)

