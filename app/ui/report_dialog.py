"""Fleet > Maintenance report…: the report `tinymlops report` writes, in one click.

Every machine of a site with its ISO zone, alarms with their diagnosis and the plots, from the
recordings of the period (app.analysis.report), written as HTML or PDF in a worker (the analysis of a
site's recordings takes seconds; the GUI thread only draws), then opened in the system's viewer.
"""

from __future__ import annotations

import html
import time
from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
)

from app.domain.errors import Cancelled, DataError
from app.ui import workers
from app.ui.context import PageContext
from app.ui.file_row import with_browse
from app.ui.progress import JobProgress

# The periods offered (any `30m`, `12h`, `7d`, `2w` may be typed); a maintenance round is weekly.
PERIODS = ("24h", "7d", "30d")
DEFAULT_PERIOD = "7d"
FORMATS = "HTML report (*.html);;PDF report (*.pdf)"


def default_report_path(site: str, now: float | None = None) -> Path:
    """`<data dir>/reports/<site>-<date>.html`: where a report goes unless the engineer picks a file."""
    from app.domain.paths import data_dir

    stamp = time.strftime("%Y-%m-%d", time.localtime(now))
    return data_dir() / "reports" / f"{site or 'all-sites'}-{stamp}.html"


def write_report(progress, cancel, site: str, since_text: str, out: Path) -> tuple[Path, int]:
    """The worker's job: collect the site's recordings of the period, analyse them, write `out`
    (a file that cannot be written is a DataError naming it, not a traceback)."""
    from app.analysis import report

    since_s = report.parse_since(since_text)
    progress(JobProgress(10, f"analysing the recordings of {site or 'every site'} in the last {since_text}"))
    entries = report.collect(site or None, since_s)
    if cancel.is_set():
        raise Cancelled("report cancelled")
    progress(JobProgress(70, f"writing {out.name} ({len(entries)} machines)"))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        report.write(entries, site or None, since_text, out)
    except OSError as exc:
        raise DataError(f"cannot write the report to {out}: {exc.strerror or exc}") from exc
    return out, len(entries)


class ReportDialog(QDialog):
    """Site, period and file; Write runs the report in a worker with a progress bar."""

    def __init__(self, ctx: PageContext, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Maintenance report")
        self.ctx = ctx
        self.worker: workers.Worker | None = None
        self.written: Path | None = None
        form = QFormLayout(self)
        self.site = QComboBox()
        self.site.setEditable(True)
        self.site.addItems(["", *self._sites()])
        self.site.setToolTip("The site (first part of the devices' location); empty: every site")
        self.since = QComboBox()
        self.since.setEditable(True)
        self.since.addItems(PERIODS)
        self.since.setCurrentText(DEFAULT_PERIOD)
        self.since.setToolTip("The period whose recordings are analysed: 30m, 12h, 7d, 2w")
        self.out = QLineEdit(str(default_report_path(self.site.currentText())))
        self.out.setToolTip("FILE.html or FILE.pdf")
        self.site.currentTextChanged.connect(lambda s: self.out.setText(str(default_report_path(s))))
        out_row = with_browse(self.out, self._browse)
        self.progress = QProgressBar()
        self.progress.hide()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form.addRow("Site", self.site)
        form.addRow("Period", self.since)
        form.addRow("Report file", out_row)
        form.addRow(self.progress)
        form.addRow(self.status)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.write_button = self.buttons.addButton("Write report", QDialogButtonBox.ButtonRole.ActionRole)
        self.open_button = self.buttons.addButton("Open", QDialogButtonBox.ButtonRole.ActionRole)
        self.open_button.setEnabled(False)
        self.write_button.clicked.connect(self.start)
        self.open_button.clicked.connect(self._open)
        self.buttons.rejected.connect(self.reject)
        form.addRow(self.buttons)
        self.resize(560, 0)

    def _sites(self) -> list[str]:
        sites = set()
        for device_id in self.ctx.fleet.device_ids():
            record = self.ctx.fleet.record(device_id)
            if record is not None and record.site:
                sites.add(record.site)
        return sorted(sites)

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Report file", self.out.text(), FORMATS)
        if path:
            self.out.setText(path)

    def start(self) -> workers.Worker | None:
        out = Path(self.out.text().strip()).expanduser()
        if out.suffix.lower() not in (".html", ".htm", ".pdf"):
            self._problem(f"{out.name or 'the report file'}: choose a .html or .pdf file")
            return None
        site, since = self.site.currentText().strip(), self.since.currentText().strip()
        worker = workers.Worker(write_report, site, since, out, name=f"report {site or 'all sites'}")
        worker.progress.connect(self._on_progress)
        worker.result.connect(self._done)
        worker.errored.connect(lambda exc: self._problem(str(exc)))
        self.worker = worker
        self.write_button.setEnabled(False)
        self.open_button.setEnabled(False)
        self.progress.setValue(0)
        self.progress.show()
        self.status.setStyleSheet("")
        self.status.setText("Writing the report…")
        self.ctx.track_job(worker, f"report {site or 'all sites'}")
        return worker.start()

    def _on_progress(self, p: JobProgress) -> None:
        self.progress.setValue(max(self.progress.value(), p.percent))
        self.status.setText(html.escape(p.text))

    def _done(self, result: tuple[Path, int]) -> None:
        out, machines = result
        self.written = out
        self.progress.setValue(100)
        self.write_button.setEnabled(True)
        self.open_button.setEnabled(True)
        self.status.setText(f"Report written: {html.escape(str(out))} ({machines} machines)")
        self.ctx.notify("ok", "", f"maintenance report written to {out} ({machines} machines)")

    def _problem(self, text: str) -> None:
        self.progress.hide()
        self.write_button.setEnabled(True)
        self.status.setStyleSheet("color: #c62828")
        self.status.setText(html.escape(text))

    def _open(self) -> None:
        if self.written is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.written)))
