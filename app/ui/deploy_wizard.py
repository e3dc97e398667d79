"""Deploy wizard: version -> targets -> transport -> options -> run (a progress bar per device)
-> the deployment, loading and inference latencies per device. The deployment runs in a worker
through app.deploy.api; a bad image, a vanished port or a refusing device is a message on the
run page, never a traceback."""

from __future__ import annotations

import html
import logging
import threading
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
    QWizard,
    QWizardPage,
)

from app.protocol.framing import DEFAULT_BAUD
from app.services.app_session import serial_port_released
from app.ui import workers
from app.ui.context import PageContext
from app.ui.fit_panel import FitPanel
from app.ui.progress import DeviceProgress, Progress
from app.ui.settings import BAUDS

log = logging.getLogger(__name__)

RESULT_COLUMNS = ("Device", "Outcome", "Transport", "Deploy (host)", "Deploy (device)", "Load",
                  "Inference median", "Inference p95", "Error")
PAGE_VERSION, PAGE_TARGETS, PAGE_TRANSPORT, PAGE_OPTIONS, PAGE_RUN = range(5)


def _ms(us: int | None) -> str:
    """Device-reported microseconds, readable: µs below a millisecond, ms above."""
    if us is None:
        return "-"
    return f"{us} µs" if us < 1000 else f"{us / 1000:.2f} ms"


class VersionPage(QWizardPage):
    def __init__(self, wizard: DeployWizard) -> None:
        super().__init__()
        self.wiz = wizard
        self.setTitle("Model version")
        self.setSubTitle("Pick the version to deploy (deployable versions of the registry), or an image file.")
        self.list = QListWidget()
        self.list.currentRowChanged.connect(lambda _r: self.completeChanged.emit())
        self.file_label = QLabel("")
        browse = QPushButton("Image file (.tmlm)…")
        browse.setToolTip("Deploy a model image file instead of a registry version")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.file_label, 1)
        row.addWidget(browse)
        layout = QVBoxLayout(self)
        layout.addWidget(self.list)
        layout.addLayout(row)
        self.versions: list = []

    def initializePage(self) -> None:
        from app.ml.registry import Registry

        self.list.clear()
        try:
            with Registry() as reg:
                self.versions = [v for v in reg.list() if v.deployable]
        except Exception as exc:  # the registry file is unreadable: say so on the page
            self.versions = []
            self.file_label.setText(f"cannot read the registry: {exc}")
        for mv in reversed(self.versions):  # newest first
            item = QListWidgetItem(f"{mv.ref}   image {mv.image_size / 1024:.1f} KB, arena {mv.arena / 1024:.1f} KB"
                                   + (f", threshold {mv.threshold:.4f}" if mv.threshold is not None else ""))
            item.setData(Qt.ItemDataRole.UserRole, mv.ref)
            self.list.addItem(item)
        if self.wiz.source is not None and not isinstance(self.wiz.source, Path):
            self.select_ref(self.wiz.source)
        elif self.list.count() and self.wiz.source is None:
            self.list.setCurrentRow(0)

    def select_ref(self, ref: str) -> bool:
        for i in range(self.list.count()):
            if self.list.item(i).data(Qt.ItemDataRole.UserRole) == ref:
                self.list.setCurrentRow(i)
                self.wiz.source = ref
                return True
        return False

    def set_file(self, path: str | Path) -> None:
        self.wiz.source = Path(path)
        self.list.setCurrentRow(-1)
        self.file_label.setText(f"file: {Path(path).name}")
        self.completeChanged.emit()

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model image", "", "Model images (*.tmlm);;All files (*)")
        if path:
            self.set_file(path)

    def isComplete(self) -> bool:
        return self.list.currentRow() >= 0 or isinstance(self.wiz.source, Path)

    def validatePage(self) -> bool:
        item = self.list.currentItem()
        if item is not None and self.list.currentRow() >= 0:
            self.wiz.source = item.data(Qt.ItemDataRole.UserRole)
        return self.wiz.source is not None

    def version(self):
        if isinstance(self.wiz.source, str):
            return next((v for v in self.versions if v.ref == self.wiz.source), None)
        return None


class TargetsPage(QWizardPage):
    def __init__(self, wizard: DeployWizard) -> None:
        super().__init__()
        self.wiz = wizard
        self.setTitle("Target devices")
        self.setSubTitle("Tick the devices to update (the fleet selection is ticked). A device the model does "
                         "not fit is marked; it would refuse the image.")
        self.list = QListWidget()
        self.list.itemChanged.connect(lambda _i: self.completeChanged.emit())
        layout = QVBoxLayout(self)
        layout.addWidget(self.list)

    def initializePage(self) -> None:
        mv = self.wiz.version_page.version()
        model = self.wiz.ctx.fleet
        wanted = set(self.wiz.targets)
        self.list.blockSignals(True)
        self.list.clear()
        for device_id in model.device_ids():
            rec = model.record(device_id)
            text = f"{device_id}   {rec.location}   {rec.profile}   now {rec.model_name}@{rec.model_version}"
            if not rec.online:
                text += "   (offline)"
            fit = (mv.fit or {}).get(rec.profile) if mv is not None else None
            if fit is not None and not fit.get("fits"):
                text += "   — does not fit: " + "; ".join(fit.get("reasons") or [])
            item = QListWidgetItem(text)
            item.setData(Qt.ItemDataRole.UserRole, device_id)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if device_id in wanted else Qt.CheckState.Unchecked)
            if not rec.online or (fit is not None and not fit.get("fits")):
                item.setForeground(Qt.GlobalColor.darkGray)
            self.list.addItem(item)
        self.list.blockSignals(False)
        self.completeChanged.emit()

    def checked(self) -> list[str]:
        return [self.list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.list.count())
                if self.list.item(i).checkState() == Qt.CheckState.Checked]

    def isComplete(self) -> bool:
        return bool(self.checked())

    def validatePage(self) -> bool:
        self.wiz.targets = self.checked()
        return bool(self.wiz.targets)


class TransportPage(QWizardPage):
    def __init__(self, wizard: DeployWizard) -> None:
        super().__init__()
        self.wiz = wizard
        self.setTitle("Transport")
        self.setSubTitle("MQTT reaches the whole line at once (devices fetch the model from the broker); USB "
                         "serial reaches the one device on the cable.")
        self.mqtt = QRadioButton("MQTT through the broker")
        self.serial = QRadioButton("USB serial")
        group = QButtonGroup(self)
        group.addButton(self.mqtt)
        group.addButton(self.serial)
        self.port = QComboBox()
        self.port.setEditable(True)
        self.port.setToolTip("Serial port (a pty path or socket://host:port also works)")
        self.baud = QComboBox()
        for b in BAUDS:
            self.baud.addItem(str(b), b)
        refresh = QPushButton("Refresh ports")
        refresh.clicked.connect(self.refresh_ports)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        form = QFormLayout(self)
        form.addRow(self.mqtt)
        form.addRow(self.serial)
        row = QHBoxLayout()
        row.addWidget(self.port, 1)
        row.addWidget(refresh)
        form.addRow("Port", row)
        form.addRow("Baud", self.baud)
        form.addRow(self.note)
        self.mqtt.toggled.connect(self._toggled)
        self.serial.toggled.connect(self._toggled)
        self.port.currentTextChanged.connect(lambda _t: self.completeChanged.emit())

    def initializePage(self) -> None:
        settings = self.wiz.ctx.settings()
        (self.serial if settings.transport == "serial" else self.mqtt).setChecked(True)
        self.baud.setCurrentIndex(max(0, self.baud.findData(settings.baud)))
        self.refresh_ports()
        self._toggled()

    def refresh_ports(self) -> None:
        from app.transport.discovery import list_serial_ports

        current = self.port.currentText()
        self.port.clear()
        try:
            ports = list_serial_ports()
        except Exception as exc:  # sysfs unreadable: the user can still type a port
            ports = []
            self.note.setText(f"could not list serial ports: {exc}")
        for p in ports:
            self.port.addItem(f"{p.device}", p.device)
            self.port.setItemData(self.port.count() - 1, p.description, Qt.ItemDataRole.ToolTipRole)
        if current:
            self.port.setEditText(current)

    def _toggled(self, *_args) -> None:
        serial = self.serial.isChecked()
        self.port.setEnabled(serial)
        self.baud.setEnabled(serial)
        n = len(self.wiz.targets)
        if serial and n > 1:
            self.note.setText(f"A serial port reaches one device: {n} are ticked. Go back and tick one, or use MQTT.")
        elif serial and not self.port.count():
            self.note.setText("No serial ports found: plug the device in and press Refresh, or type a port.")
        else:
            self.note.setText("")
        self.completeChanged.emit()

    def isComplete(self) -> bool:
        if self.serial.isChecked():
            return bool(self.port.currentText().strip()) and len(self.wiz.targets) == 1
        return True

    def validatePage(self) -> bool:
        self.wiz.via = "serial" if self.serial.isChecked() else "mqtt"
        self.wiz.port = self.port.currentText().strip() or None
        self.wiz.baud = int(self.baud.currentData())
        return True


class OptionsPage(QWizardPage):
    def __init__(self, wizard: DeployWizard) -> None:
        super().__init__()
        self.wiz = wizard
        self.setTitle("Options")
        self.setSubTitle("A trial activation reverts by itself unless confirmed; a staged rollout updates a "
                         "few canary devices first and stops if they fail. Below: will the model false-alarm "
                         "on each target machine?")
        self.trial = QCheckBox("Activate on trial (confirm later from the fleet's context menu)")
        self.trial_timeout = QSpinBox()
        self.trial_timeout.setRange(0, 65535)
        self.trial_timeout.setValue(300)
        self.trial_timeout.setSuffix(" s")
        self.trial_timeout.setToolTip("Revert unless confirmed within this time (0: the device default, 300 s)")
        self.staged = QCheckBox("Staged rollout: canary devices first")
        self.canary = QSpinBox()
        self.canary.setRange(1, 100)
        self.canary.setValue(1)
        self.canary_threshold = QDoubleSpinBox()
        self.canary_threshold.setRange(0.0, 1.0)
        self.canary_threshold.setSingleStep(0.1)
        self.canary_threshold.setValue(1.0)
        self.canary_threshold.setToolTip("Share of canaries that must succeed before the rest are updated")
        self.bench = QSpinBox()
        self.bench.setRange(0, 1000)
        self.bench.setValue(20)
        self.bench.setToolTip("Inferences the device times after activation (inference latency)")
        form = QFormLayout(self)
        form.addRow(self.trial)
        form.addRow("Trial timeout", self.trial_timeout)
        form.addRow(self.staged)
        form.addRow("Canary devices", self.canary)
        form.addRow("Canary success needed", self.canary_threshold)
        form.addRow("Benchmark inferences", self.bench)
        self.fit = FitPanel(self)  # fit to machine: checked in a worker while the options are set
        form.addRow(self.fit)

    def initializePage(self) -> None:
        self.fit.start(self.wiz.source, self.wiz.targets, self.wiz.ctx.session(), self.wiz.via)

    def validatePage(self) -> bool:
        self.wiz.trial = self.trial.isChecked()
        self.wiz.trial_timeout_s = self.trial_timeout.value()
        self.wiz.canary = self.canary.value() if self.staged.isChecked() else 0
        self.wiz.canary_threshold = self.canary_threshold.value()
        self.wiz.bench_count = self.bench.value()
        return True


class RunPage(QWizardPage):
    def __init__(self, wizard: DeployWizard) -> None:
        super().__init__()
        self.wiz = wizard
        self.setTitle("Deploying")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.table = QTableWidget(0, len(RESULT_COLUMNS))
        self.table.setHorizontalHeaderLabels(RESULT_COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.cancel_button = QPushButton("Cancel deployment")
        self.cancel_button.setToolTip("Stop after the current step; every device keeps a working model")
        self.cancel_button.clicked.connect(self.wiz.cancel_run)
        layout = QVBoxLayout(self)
        layout.addWidget(self.status)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.cancel_button, 0, Qt.AlignmentFlag.AlignRight)
        self.bars: dict[str, QProgressBar] = {}

    def initializePage(self) -> None:
        self.table.setRowCount(len(self.wiz.targets))
        self.bars.clear()
        for row, device_id in enumerate(self.wiz.targets):
            self.table.setItem(row, 0, QTableWidgetItem(device_id))
            bar = QProgressBar()
            bar.setRange(0, 100)
            bar.setFormat("waiting")
            self.table.setCellWidget(row, 1, bar)
            self.bars[device_id] = bar
        self.table.resizeColumnToContents(0)
        self.table.setColumnWidth(1, 180)
        self.wiz.start_run()

    def isComplete(self) -> bool:
        return self.wiz.worker is not None and self.wiz.worker.done

    def device_progress(self, device_id: str, done: int, total: int) -> None:
        bar = self.bars.get(device_id)
        if bar is not None and total:
            bar.setValue(int(100 * done / total))
            bar.setFormat(f"{done}/{total} chunks")

    def show_results(self, results: list) -> None:
        self.table.setRowCount(len(results))
        for row, r in enumerate(results):
            self.table.removeCellWidget(row, 1)
            cells = (r.device, r.outcome, r.transport,
                     "-" if r.host_deploy_s is None else f"{r.host_deploy_s:.2f} s", _ms(r.device_deploy_us),
                     _ms(r.load_us), _ms(r.inference_median_us), _ms(r.inference_p95_us),
                     (r.error_message or "") + (" (emulated clock)" if r.emulated else ""))
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col == 1:
                    item.setForeground(Qt.GlobalColor.darkGreen if r.ok else Qt.GlobalColor.red)
                if col == len(cells) - 1 and text:
                    item.setToolTip(text)
                self.table.setItem(row, col, item)
        self._fit()

    def show_failure(self, targets: list[str], via: str, message: str) -> None:
        """The deployment stopped before any device result: each target's row says so."""
        self.table.setRowCount(len(targets))
        for row, device_id in enumerate(targets):
            self.table.removeCellWidget(row, 1)
            cells = (device_id, "not deployed", via, "-", "-", "-", "-", "-", message)
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col == 1:
                    item.setForeground(Qt.GlobalColor.red)
                if col == len(cells) - 1:
                    item.setToolTip(message)
                self.table.setItem(row, col, item)
        self._fit()

    def _fit(self) -> None:
        self.table.resizeColumnsToContents()
        self.table.clearSelection()
        self.table.setCurrentCell(-1, -1)  # no focus frame on the first cell
        self.bars.clear()


class DeployWizard(QWizard):
    """`DeployWizard(context, targets, parent=window)`; `finished_run(list[DeploymentResult])` when done."""

    finished_run = Signal(list)

    def __init__(self, context: PageContext, targets: list[str], source: str | Path | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = context
        self.setWindowTitle("Deploy a model")
        self.setWizardStyle(QWizard.WizardStyle.ClassicStyle)
        self.targets = list(targets)
        self.source: str | Path | None = source
        self.via = "mqtt"
        self.port: str | None = None
        self.baud = DEFAULT_BAUD
        self.trial = False
        self.trial_timeout_s = 0
        self.canary = 0
        self.canary_threshold = 1.0
        self.bench_count = 20
        self.worker: workers.Worker | None = None
        self.results: list = []
        self.error: str | None = None
        self.reattach_error: str | None = None
        self.version_page = VersionPage(self)
        self.targets_page = TargetsPage(self)
        self.transport_page = TransportPage(self)
        self.options_page = OptionsPage(self)
        self.run_page = RunPage(self)
        for page_id, page in enumerate((self.version_page, self.targets_page, self.transport_page, self.options_page,
                                        self.run_page)):
            self.setPage(page_id, page)
        self.setOption(QWizard.WizardOption.NoBackButtonOnLastPage, True)
        self.setOption(QWizard.WizardOption.NoCancelButtonOnLastPage, True)
        self.resize(860, 560)

    def start_run(self) -> None:
        from app.deploy import api

        session = self.ctx.session()
        if self.via == "mqtt" and session is None:
            self._failed("not connected to a broker: MQTT deployment is not possible now")
            self._mark_done()
            return
        kwargs = dict(via=self.via, trial=self.trial, trial_timeout_s=self.trial_timeout_s,
                      bench_count=self.bench_count, canary=self.canary, canary_threshold=self.canary_threshold)
        if self.via == "serial":
            kwargs.update(port=self.port, baud=self.baud)
        else:
            kwargs.update(broker=session.broker_url)  # recorded in the history: never holds the password
        source = self.source
        targets = list(self.targets)
        kwargs["fit_gate"] = self.options_page.fit.gate()
        self.options_page.fit.stop()

        def job(progress, cancel: threading.Event):
            def per_device(device_id: str, done: int, total: int) -> None:
                progress(DeviceProgress(device_id, done, total))

            if self.via != "mqtt":
                # a port the fleet view holds open is released for the transfer and attached again after
                with serial_port_released(session, self.port, self.baud) as release:
                    results = api.deploy(source, targets, progress=per_device, cancel=cancel, **kwargs)
                self.reattach_error = release.reattach_error  # the port vanished: the outcome still counts
                return results
            image = api.load_image(source)  # a bad image is refused before any connection is made
            # the fleet monitor holds every device's latest HELLO: the deployment need not ask again
            known = session.monitor.hellos(targets) if session.monitor else {}
            connection = session.open_connection()  # its own: see AppSession.open_connection
            try:
                return api.deploy(image, targets, progress=per_device, cancel=cancel, connection=connection,
                                  hellos=known, **kwargs)
            finally:
                connection.close()

        self.reattach_error = None
        self.run_page.status.setText(f"Deploying {source if isinstance(source, str) else Path(source).name} to "
                                     f"{len(targets)} device{'s' if len(targets) != 1 else ''} over {self.via}…")
        self.ctx.fleet.set_deploying(targets, True)
        self.worker = workers.Worker(job, name="deploy")
        self.worker.progress.connect(self._progress)
        self.worker.result.connect(self._done)
        self.worker.errored.connect(lambda exc: self._failed(workers.error_text(exc)))
        self.worker.finished.connect(self._mark_done)
        self.ctx.track_job(self.worker, "deploy")
        self.worker.start()

    def _progress(self, step: Progress) -> None:
        if isinstance(step, DeviceProgress) and step.total:
            self.run_page.device_progress(step.device, step.done, step.total)

    def _done(self, results: list) -> None:
        self.results = results
        ok = sum(r.ok for r in results)
        self.run_page.show_results(results)
        self.run_page.setTitle("Deployment finished")
        color = "#2e7d32" if ok == len(results) else "#c62828"
        text = (f"<span style='color:{color}'><b>{ok} of {len(results)} devices updated.</b></span> "
                + ("Latencies are in the table and on the Latency page." if ok else
                   "The reason is in the table; every device keeps a working model."))
        if self.reattach_error:
            text += (f"<br><span style='color:#e65100'>The fleet view lost the device's serial port: "
                     f"{html.escape(self.reattach_error)}. Reconnect it, then Fleet ▸ Attach serial device.</span>")
            self.ctx.notify("warning", "", f"serial port {self.port} not re-attached: {self.reattach_error}")
        self.run_page.status.setText(text)
        for r in results:
            if r.ok:
                self.ctx.notify("ok", r.device, f"deployed {r.model_name}@{r.model_version} over "
                                             f"{r.transport} in {r.host_deploy_s or 0:.2f} s (load {_ms(r.load_us)}, "
                                             f"inference {_ms(r.inference_median_us)})")
            else:
                self.ctx.notify("error", r.device, f"deployment {r.outcome}: {r.error_message}")
        self.finished_run.emit(results)

    def _failed(self, message: str) -> None:
        self.error = message
        self.run_page.setTitle("Deployment not done")
        self.run_page.status.setText(f"<span style='color:#c62828'><b>Nothing was deployed:</b> "
                                     f"{html.escape(message)}</span><br>Every device keeps its current model.")
        self.ctx.notify("error", "", f"deployment failed: {message}")
        self.run_page.show_failure(self.targets, self.via, message)

    def _mark_done(self) -> None:
        self.ctx.fleet.set_deploying(self.targets, False)
        self.run_page.cancel_button.setEnabled(False)
        self.run_page.completeChanged.emit()
        self.ctx.deployments_changed()

    def cancel_run(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            self.run_page.status.setText("cancelling: the current step finishes, every device keeps a working model…")

    def reject(self) -> None:
        self.options_page.fit.stop()
        if self.worker is not None and not self.worker.done:
            self.cancel_run()
            return  # close once the deployment has stopped (Finish is enabled then)
        super().reject()
