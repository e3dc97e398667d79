"""The main window's status bar: broker state, serial ports and devices, devices by state, the
running jobs' progress, and the dropped-message warnings (told once per batch in the events).

It reads the session through AppSession's own queries (monitor counters, serial_bad_frames()),
never through the transport objects behind them.
"""

from __future__ import annotations

import logging
import time

from PySide6.QtWidgets import QLabel, QProgressBar, QStatusBar

from app.services.app_session import AppSession
from app.ui import workers
from app.ui.context import NotifyFn
from app.ui.fleet_model import STATUS_COLORS, FleetModel
from app.ui.jobs import count_serial_ports_job

log = logging.getLogger(__name__)

# The status bar's port count: a cable plugged in shows within this long, without rescanning sysfs
# on every telemetry batch.
PORT_SCAN_INTERVAL_S = 10.0
# Width of the running job's progress bar (px): room for "deploy 100%".
JOB_PROGRESS_WIDTH = 160


class StatusPanel:
    """Builds its labels into `bar`; `refresh(session)` once a second, `connection_state` on change."""

    def __init__(self, bar: QStatusBar, fleet: FleetModel, events: NotifyFn) -> None:
        self.fleet = fleet
        self._events = events  # events panel only: these are states, not job outcomes for the banner
        self.broker_label = QLabel("broker: starting…")
        self.broker_label.setToolTip("MQTT broker connection")
        self.serial_label = QLabel("serial: -")
        self.serial_label.setToolTip("Serial ports on this computer / devices attached over serial")
        self.fleet_label = QLabel("")
        self.fleet_label.setToolTip("Devices by state")
        self.job_progress = QProgressBar()
        self.job_progress.setMaximumWidth(JOB_PROGRESS_WIDTH)
        self.job_progress.setTextVisible(True)
        self.job_progress.hide()
        for widget in (self.job_progress, self.fleet_label, self.serial_label, self.broker_label):
            bar.addPermanentWidget(widget)
        self._jobs: list[workers.Worker] = []
        self._port_count = 0
        self._ports_checked = float("-inf")
        self._port_scan: workers.Worker | None = None
        self._bad_seen = 0  # malformed broker messages already reported
        self._caps_text = ""  # the broker probe's result in words (app.transport.broker_probe)
        self._bad_serial_seen: dict[str, int] = {}  # port -> malformed frames already reported

    # ------------------------------------------------------------------ jobs

    def track_job(self, worker: workers.Worker, label: str) -> None:
        """Show a running job's progress in the status bar."""
        self._jobs.append(worker)
        self.job_progress.setFormat(f"{label} %p%")
        self.job_progress.setValue(0)
        self.job_progress.show()
        worker.progress.connect(lambda step: self.job_progress.setValue(step.percent))

        def done() -> None:
            if worker in self._jobs:
                self._jobs.remove(worker)
            if not self._jobs:
                self.job_progress.hide()

        worker.finished.connect(done)

    # ------------------------------------------------------------------ broker

    def connecting(self, target: str) -> None:
        self.broker_label.setText(f"broker: connecting to {target}…")

    def not_connected(self) -> None:
        self.broker_label.setText("<span style='color:#c62828'>● broker: not connected</span>")

    def connection_state(self, up: bool, reason: str, address: str) -> None:
        if up:
            self.broker_label.setText(f"<span style='color:#2e7d32'>●</span> broker {address}")
            self.broker_label.setToolTip(f"Connected to the MQTT broker at {address}"
                                         + (f"\n{self._caps_text}" if self._caps_text else ""))
        else:
            self.broker_label.setText(f"<span style='color:#c62828'>●</span> broker {address}: {reason}")
            self.broker_label.setToolTip(f"Not connected ({reason}); reconnecting with back-off")

    def session_changed(self) -> None:
        """A new session: its counters start from zero."""
        self._bad_seen = 0

    # ------------------------------------------------------------------ periodic

    def refresh(self, session: AppSession | None) -> None:
        counts = self.fleet.counts()
        total = sum(counts.values())
        parts = [f"<span style='color:{STATUS_COLORS[k]}'>{v} {k}</span>" for k, v in counts.items() if v]
        self.fleet_label.setText(f"{total} devices: " + ", ".join(parts) if total else "no devices yet")
        self._update_serial_label()
        if session is not None and session.monitor is not None:
            self._show_capabilities(session)
            self._report_bad_messages(session)
            self._report_bad_serial(session)

    def _show_capabilities(self, session: AppSession) -> None:
        """What the broker supports, in the broker label's tooltip once the probe has finished."""
        caps = session.broker_capabilities
        if caps is None or caps.describe() == self._caps_text:
            return
        self._caps_text = caps.describe()
        if session.connection is not None and session.connection.connected:
            self.broker_label.setToolTip(f"Connected to the MQTT broker at {session.address}\n{self._caps_text}")

    def _report_bad_messages(self, session: AppSession) -> None:
        """Messages the fleet monitor dropped (garbage, wrong type, bad id): counted there, told here."""
        bad = {k[4:]: v for k, v in list(session.monitor.counters.items()) if k.startswith("bad_")}
        total = sum(bad.values())
        if total > self._bad_seen:
            reasons = ", ".join(f"{v} {k}" for k, v in sorted(bad.items()))
            n = total - self._bad_seen
            self._events("warning", "", f"dropped {n} malformed message{'s' if n != 1 else ''} from the broker "
                         f"(so far: {reasons})")
            self.broker_label.setToolTip(f"Dropped messages so far: {reasons}")
        self._bad_seen = total

    def _report_bad_serial(self, session: AppSession) -> None:
        """Frames a serial device sent that were line noise (bad COBS/CRC, truncated, oversized) or
        not protocol messages: told once per batch per port."""
        for port, bad in session.serial_bad_frames().items():
            total = sum(bad.values())
            before = self._bad_serial_seen.get(port, 0)
            if total < before:  # the port was reopened: its counters started again
                before = 0
            if total > before:
                reasons = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(bad.items()))
                n = total - before
                self._events("warning", "", f"serial port {port}: dropped {n} malformed frame{'s' if n != 1 else ''} "
                             f"(so far: {reasons}); check the cable and the baud rate")
            self._bad_serial_seen[port] = total

    def _update_serial_label(self) -> None:
        serial_devices = self.fleet.online_on("serial")
        if time.monotonic() - self._ports_checked > PORT_SCAN_INTERVAL_S and self._port_scan is None:
            # sysfs/udev is IO: scanned in a worker, the label shows the last count meanwhile
            self._ports_checked = time.monotonic()
            self._port_scan = workers.run_in_thread(count_serial_ports_job, name="serial port scan",
                                                    on_result=self._ports_counted,
                                                    on_finished=self._scan_finished)
        ports = self._port_count
        self.serial_label.setText(f"serial: {ports} port{'s' if ports != 1 else ''}, "
                                  f"{serial_devices} device{'s' if serial_devices != 1 else ''}")

    def _scan_finished(self) -> None:
        self._port_scan = None

    def _ports_counted(self, count: int) -> None:
        if count != self._port_count:
            self._port_count = count
            self._update_serial_label()
