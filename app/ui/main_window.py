"""Main window: fleet browser (dock), Live / Models / Latency tabs, events and alarms (dock),
status bar with broker and serial state. The window is built first and shown at once; the
session (broker, fleet, monitor) is started in a worker and attached when it is up.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QIcon, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.ui import layout_memory, serial_attach, workers
from app.ui.alarm_followup import AlarmFollowUp
from app.ui.context import PageContext
from app.ui.device_switch import switch_model
from app.ui.events import EventsPanel
from app.ui.fleet_model import FleetModel
from app.ui.fleet_view import FleetView
from app.ui.live_view import LiveView
from app.ui.session_keeper import SessionKeeper
from app.ui.settings import Settings
from app.ui.status_bar import StatusPanel

log = logging.getLogger(__name__)

# Fleet updates are applied once per 60 Hz frame: 10,000 devices at 1 Hz are ~170 records a batch
# (well under a millisecond), where 4 batches a second held the GUI thread ~10 ms each. The tree
# repaints its values less often (app.ui.fleet_view.REPAINT_INTERVAL_MS).
FLEET_FLUSH_MS = 16
# "Last seen" ages and the status bar are refreshed this often.
AGE_REFRESH_MS = 1000
DEFAULT_SIZE = (1440, 900)
FLEET_DOCK_WIDTH = 800
EVENTS_DOCK_HEIGHT = 170
TAB_LIVE, TAB_MODELS, TAB_LATENCY, TAB_TREND = range(4)



class _Bridge(QObject):
    """Carries rare notifications (connection state) from IO threads to the GUI thread; the
    session they come from is passed along, so a closing old session's "disconnected" is ignored."""

    connection_state = Signal(object, bool, str)


class MainWindow(QMainWindow):
    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__()
        self.settings = settings or Settings.load()
        self.sessions = SessionKeeper(self)
        self.setWindowTitle("Tiny-MLOps operator")
        icon = _app_icon()
        if icon is not None:
            self.setWindowIcon(icon)
        self.bridge = _Bridge()
        self.bridge.connection_state.connect(self._on_session_state)

        self.fleet_model = FleetModel(self)
        self.fleet_view = FleetView(self.fleet_model)
        self.events = EventsPanel()
        self.fleet_model.events.connect(self._on_fleet_events)
        self.live = LiveView()
        self.live.status_message.connect(lambda t: self.statusBar().showMessage(t, 5000))
        self.live.condition.machine_changed.connect(lambda _d: self.fleet_model.set_machine_classes(None))
        from app.ui.dashboard import DashboardPage
        from app.ui.models_page import ModelsPage

        self.page_context = PageContext(
            notify=self.notify, fleet=self.fleet_model, session=lambda: self.session,
            settings=lambda: self.settings, track_job=self.track_job, selected_devices=self.fleet_view.selected,
            open_deploy_wizard=self.open_deploy_wizard, deployments_changed=lambda: self.dashboard.refresh(),
            show_status=lambda text: self.statusBar().showMessage(text))
        self.models = ModelsPage(self.page_context)
        self.dashboard = DashboardPage()
        from app.ui.trend_panel import TrendPanel

        self.trend = TrendPanel(self.page_context)
        self.alarm_followup = AlarmFollowUp(self.page_context, self)

        self.tabs = QTabWidget()
        self.tabs.addTab(self.live, "Live")
        self.tabs.addTab(self.models, "Models")
        self.tabs.addTab(self.dashboard, "Latency")
        self.tabs.addTab(self.trend, "Trend")
        self.tabs.setTabToolTip(TAB_LIVE, "Live vibration, spectrum and anomaly score of the selected device (Ctrl+1)")
        self.tabs.setTabToolTip(TAB_MODELS, "Model registry: record data, train, import, check (Ctrl+2)")
        self.tabs.setTabToolTip(TAB_LATENCY, "Deployment history: deployment, loading and inference latency (Ctrl+3)")
        self.tabs.setTabToolTip(TAB_TREND, "Score trend and drift of the selected device; Adapt… retrains it (Ctrl+4)")
        self.tabs.currentChanged.connect(self._tab_changed)

        self.banner = QLabel("")
        self.banner.setWordWrap(True)
        self.banner.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.banner_box = QWidget()
        banner_row = QHBoxLayout(self.banner_box)
        banner_row.setContentsMargins(8, 4, 8, 4)
        banner_row.addWidget(self.banner, 1)
        close = QToolButton()
        close.setText("✕")
        close.setToolTip("Dismiss")
        close.clicked.connect(self.banner_box.hide)
        banner_row.addWidget(close)
        self.banner_box.hide()
        central = QWidget()
        col = QVBoxLayout(central)
        col.setContentsMargins(0, 0, 0, 0)
        col.addWidget(self.banner_box)
        col.addWidget(self.tabs, 1)
        self.setCentralWidget(central)

        self.fleet_dock = self._dock("Fleet", "fleet", self.fleet_view, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.events_dock = self._dock("Events and alarms", "events", self.events,
                                      Qt.DockWidgetArea.BottomDockWidgetArea)

        self.fleet_view.selection_changed.connect(self._selection_changed)
        self.events.retrain_requested.connect(self.retrain)
        self.fleet_view.live_requested.connect(self.show_live)
        self.fleet_view.compare_requested.connect(lambda d: self.live.show_devices(self.live.primary, d))
        self.fleet_view.deploy_requested.connect(self.open_deploy_wizard)
        self.fleet_view.rollback_requested.connect(self.rollback)
        self.fleet_view.confirm_requested.connect(self.confirm_trial)

        self._build_status_bar()
        self._build_menus()
        self.sessions.attached.connect(self.attach_session)
        self.sessions.detaching.connect(self._session_detaching)
        self.sessions.failed.connect(self._session_failed)
        self.sessions.progress.connect(lambda text: self.statusBar().showMessage(text, 3000))
        self._choices_at = -1  # the fleet membership the live view's compare list was built from
        self.flush_timer = QTimer(self)
        self.flush_timer.setInterval(FLEET_FLUSH_MS)
        self.flush_timer.timeout.connect(self._flush)
        self.flush_timer.start()
        self.age_timer = QTimer(self)
        self.age_timer.setInterval(AGE_REFRESH_MS)
        self.age_timer.timeout.connect(self._tick)
        self.age_timer.start()
        self.resize(*DEFAULT_SIZE)
        self._layout_restored = layout_memory.restore(self, self.fleet_view, self.tabs)

    # ------------------------------------------------------------------ construction

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if not self._layout_restored:  # first start: give the fleet its room (docks size once shown)
            self._layout_restored = True
            self.resizeDocks([self.fleet_dock], [FLEET_DOCK_WIDTH], Qt.Orientation.Horizontal)
            self.resizeDocks([self.events_dock], [EVENTS_DOCK_HEIGHT], Qt.Orientation.Vertical)

    def _dock(self, title: str, name: str, widget: QWidget, area) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock-{name}")
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _build_status_bar(self) -> None:
        self.status = StatusPanel(self.statusBar(), self.fleet_model, self.events.model.add)
        # the labels by their old names: the tests and the smoke test read them
        self.broker_label, self.serial_label = self.status.broker_label, self.status.serial_label
        self.fleet_label, self.job_progress = self.status.fleet_label, self.status.job_progress

    def _action(self, menu, text: str, slot, shortcut: str | None = None, tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
        if tip:
            action.setStatusTip(tip)
            action.setToolTip(tip)
        action.triggered.connect(slot)
        menu.addAction(action)
        return action

    def _build_menus(self) -> None:
        bar = self.menuBar()
        m = bar.addMenu("&File")
        self._action(m, "&Settings…", self.open_settings, "Ctrl+,", "Broker, transport and data directory")
        self._action(m, "&Reconnect", self.reconnect, "Ctrl+Shift+R", "Start the session again with the settings")
        m.addSeparator()
        self._action(m, "&Quit", self.close, QKeySequence(QKeySequence.StandardKey.Quit).toString(), "Quit")
        m = bar.addMenu("&Fleet")
        self._action(m, "&Find device", self._focus_search, "Ctrl+F", "Search the fleet")
        self._action(m, "&Deploy to selection…", lambda: self.open_deploy_wizard(self.fleet_view.selected()),
                     "Ctrl+D", "Deploy a model version to the selected devices")
        self._action(m, "Roll &back selected", self._rollback_selected, "Ctrl+Shift+B",
                     "Make the selected device's previous model active again")
        m.addSeparator()
        self._action(m, "&Attach serial device…", self._attach_serial_dialog, "Ctrl+Shift+A",
                     "Show a device connected to this computer's serial port (USB) in the fleet")
        self._action(m, "Maintenance &report…", self.open_report, "Ctrl+Shift+P",
                     "Every machine's ISO zone, alarms with their diagnosis and plots, as HTML or PDF")
        self._action(m, "F&lash firmware…", self._flash_firmware_dialog, None,
                     "Write a board's firmware with openocd, st-flash or esptool, verify it, wait for its HELLO")
        m = bar.addMenu("&View")
        for i, (name, key) in enumerate((("Live", "Ctrl+1"), ("Models", "Ctrl+2"), ("Latency", "Ctrl+3"),
                                          ("Trend", "Ctrl+4"))):
            self._action(m, name, lambda _=False, i=i: self.tabs.setCurrentIndex(i), key, f"Show the {name} page")
        m.addSeparator()
        m.addAction(self.fleet_dock.toggleViewAction())
        m.addAction(self.events_dock.toggleViewAction())
        m = bar.addMenu("&Help")
        self._action(m, "&About", self.show_about, "F1", "Versions of this build")

    # ------------------------------------------------------------------ session

    def start_session(self, config=None) -> workers.Worker:
        """Start the back end in a worker (SessionKeeper); the window stays responsive while it
        comes up, and only the newest start's session is attached."""
        from app.services.app_session import SessionConfig

        if config is None:
            s = self.settings
            config = SessionConfig(broker_url=s.broker_url or None, username=s.username or None,
                                   password=s.password or None)
        target = "the embedded broker and a virtual fleet" if config.embedded else config.broker_url
        worker = self.sessions.start(config)
        self.status.connecting(target)
        self.banner_box.hide()
        return worker

    @property
    def session(self):
        """The attached AppSession, or None."""
        return self.sessions.session

    def _session_failed(self, message: str) -> None:
        self.status.not_connected()
        hint = ("The broker refused the user name or password. " if _is_auth_refusal(message) else "")
        self.show_banner(f"Could not connect: {message}. {hint}Check the broker URL and credentials in "
                         "File ▸ Settings, then File ▸ Reconnect.", "error")
        self.events.model.add("error", "", f"connection failed: {message}")

    def attach_session(self, session) -> None:
        self.status.session_changed()
        session.connection.on_state(lambda up, reason: self.bridge.connection_state.emit(session, up, reason))
        session.monitor.add_listener(self.fleet_model.enqueue)
        for record in session.monitor.devices():
            self.fleet_model.enqueue("added", record)
        self.live.set_monitor(session.monitor)
        self._on_connection_state(session.connection.connected, "connected")
        mode = "embedded broker, virtual fleet" if session.embedded else "plant broker"
        self.events.model.add("ok", "", f"connected to {session.address} ({mode})")
        self.models.session_changed()
        self.dashboard.refresh()

    def _session_detaching(self, session) -> None:
        self.live.set_monitor(None)
        if session.monitor is not None:
            session.monitor.remove_listener(self.fleet_model.enqueue)

    def reconnect(self) -> None:
        self.start_session()

    def _on_session_state(self, session, up: bool, reason: str) -> None:
        if session is self.session:  # a session being closed reports its disconnection: not news
            self._on_connection_state(up, reason)

    def _on_connection_state(self, up: bool, reason: str) -> None:
        self.status.connection_state(up, reason, self.session.address if self.session else "-")
        if not up and self.session is not None:
            self.events.model.add("warning", "", f"broker connection lost: {reason}")

    # ------------------------------------------------------------------ periodic

    def _flush(self) -> None:
        # the compare list follows the fleet's membership, not its telemetry: re-listing 10,000 ids
        # on every batch cost the GUI thread more than the batch itself
        self.fleet_model.flush()
        if self.fleet_model.membership != self._choices_at:
            self._choices_at = self.fleet_model.membership
            self.live.set_device_choices(self.fleet_model.device_ids())

    def _tick(self) -> None:
        self.fleet_model.refresh_ages()
        self.status.refresh(self.session)

    def _on_fleet_events(self, events: list) -> None:
        self.events.model.add_many(events)
        self.alarm_followup.on_events(events)

    # ------------------------------------------------------------------ selection, live

    def _selection_changed(self, device_ids: list[str]) -> None:
        if device_ids:
            self.live.show_devices(device_ids[0], device_ids[1] if len(device_ids) > 1 else self.live.compare)
        self.models.selection_changed(device_ids)
        self.trend.show_device(device_ids[0] if device_ids else None)

    def retrain(self, device_id: str) -> None:
        """A drift event activated: the device selected, its Trend tab and the Adapt dialog."""
        self.fleet_view.select_device(device_id)
        self.tabs.setCurrentIndex(TAB_TREND)
        self.trend.ask_adapt(device_id)

    def show_live(self, device_id: str) -> None:
        self.tabs.setCurrentIndex(TAB_LIVE)
        self.live.show_devices(device_id, self.live.compare)

    def _tab_changed(self, index: int) -> None:
        if index == TAB_LATENCY:
            self.dashboard.refresh()
        elif index == TAB_MODELS:
            self.models.refresh()

    def _focus_search(self) -> None:
        self.fleet_dock.show()
        self.fleet_view.search.setFocus()
        self.fleet_view.search.selectAll()

    # ------------------------------------------------------------------ messages

    def show_banner(self, text: str, level: str = "error") -> None:
        colors = {"error": ("#ffebee", "#b71c1c"), "warning": ("#fff3e0", "#e65100"), "info": ("#e3f2fd", "#0d47a1")}
        bg, fg = colors.get(level, colors["info"])
        self.banner_box.setStyleSheet(f"background: {bg}; color: {fg};")
        self.banner.setText(text)
        self.banner_box.show()

    def notify(self, level: str, device: str, text: str) -> None:
        """A job's outcome: status bar, events panel, and the banner for failures."""
        self.statusBar().showMessage(text, 8000)
        self.events.model.add(level, device, text)
        if level == "error":
            self.show_banner(text, "error")

    def track_job(self, worker: workers.Worker, label: str) -> None:
        """Show a running job's progress in the status bar."""
        self.status.track_job(worker, label)

    # ------------------------------------------------------------------ device actions

    def _require_session(self) -> bool:
        if self.session is None:
            self.notify("warning", "", "not connected to a broker yet")
            return False
        return True

    def rollback(self, device_id: str) -> workers.Worker | None:
        return switch_model(self.page_context, device_id, "rollback") if device_id and self._require_session() \
            else None

    def confirm_trial(self, device_id: str) -> workers.Worker | None:
        return switch_model(self.page_context, device_id, "confirm") if device_id and self._require_session() \
            else None

    def _rollback_selected(self) -> None:
        for device_id in self.fleet_view.selected()[:1]:
            self.rollback(device_id)

    def attach_serial(self, port: str, baud: int | None = None) -> workers.Worker | None:
        """Open `port` in a worker; the device then appears in the fleet with transport 'serial'."""
        if not port or not self._require_session():
            return None
        return serial_attach.attach_serial(self.page_context, port, baud)

    def _flash_firmware_dialog(self) -> None:
        from app.ui.flash_dialog import FlashDialog

        FlashDialog(self).open()

    def _attach_serial_dialog(self) -> None:
        port = serial_attach.ask_port(self)
        if port:
            self.attach_serial(port)

    def open_deploy_wizard(self, device_ids: list[str] | None = None, exec_: bool = True, source: str | None = None):
        from app.ui.deploy_wizard import DeployWizard

        wizard = DeployWizard(self.page_context, list(device_ids or self.fleet_view.selected()), source=source,
                              parent=self)
        if exec_:
            wizard.show()
        return wizard

    # ------------------------------------------------------------------ dialogs

    def open_settings(self) -> None:
        from app.ui.settings import SettingsDialog

        dialog = SettingsDialog(self.settings, self)
        if dialog.exec():
            old = self.settings
            self.settings = dialog.result_settings()
            if not self.settings.save():
                self.notify("warning", "", "no OS keyring here: the broker password is used for this session "
                            "only (or set $TINYMLOPS_BROKER_PASSWORD)")
            if (old.broker_url, old.username, old.password) != (self.settings.broker_url, self.settings.username,
                                                                 self.settings.password):
                self.reconnect()
            if old.data_dir != self.settings.data_dir:
                self.notify("info", "", "the new data directory is used from the next start")

    def open_report(self, exec_: bool = True):
        from app.ui.report_dialog import ReportDialog

        dialog = ReportDialog(self.page_context, self)
        if exec_:
            dialog.exec()
        return dialog

    def show_about(self) -> None:
        from app.ui.about import about_html

        QMessageBox.about(self, "About Tiny-MLOps operator", about_html())

    # ------------------------------------------------------------------ layout memory, shutdown

    def save_layout(self) -> None:
        layout_memory.save(self, self.fleet_view, self.tabs)

    def shutdown(self) -> None:
        """Stop timers, streams, workers and the session (idempotent); waits for the session's close."""
        self.flush_timer.stop()
        self.age_timer.stop()
        self.live.shutdown()
        self.trend.shutdown()
        self.alarm_followup.stop()
        self.dashboard.staged.shutdown()
        self.sessions.shutdown(waiting=lambda: self.statusBar().showMessage(
            "closing the session… (stopping the broker connection and devices)"))

    def closeEvent(self, event) -> None:
        self.save_layout()
        self.shutdown()
        super().closeEvent(event)


def _is_auth_refusal(message: str) -> bool:
    """MQTT CONNACK reasons for bad credentials (v3.1.1 codes 4/5, v5 0x86/0x87), as paho words them."""
    text = message.lower()
    return any(k in text for k in ("not authorized", "not authorised", "bad user name", "bad username"))


def _app_icon() -> QIcon | None:
    from app.domain.paths import resources_dir

    icons = resources_dir() / "icons"
    icon = QIcon()
    for size in (16, 24, 32, 48, 64, 128, 256):
        path = icons / f"tinymlops-{size}.png"
        if path.is_file():
            icon.addFile(str(path))
    return None if icon.isNull() else icon
