"""The GUI's back-end session: one broker connection, one fleet monitor, and (by default) the
embedded broker plus a virtual fleet, so a newcomer sees live devices at once.

Qt-free, so the start-up work can run in a worker thread while the first window is already shown.
Everything it starts it stops, in reverse order, in `close()`; a failure part-way through start
closes what was started and raises one TinyMLOpsError with a sentence the GUI can show.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from app.domain.errors import LinkError, TinyMLOpsError
from app.transport.local_broker import announce

log = logging.getLogger(__name__)

# Virtual devices of the embedded default: enough for every site/line/machine grouping and a
# faulty one (VirtualFleet makes every 7th device faulty), few enough for a laptop.
DEFAULT_DEVICE_COUNT = 8
# How often an attached serial port that vanished (cable pulled, board reset) is tried again: a
# USB adapter re-enumerates within a second or two of being plugged back in.
SERIAL_REOPEN_S = 2.0

ProgressFn = Callable[[int, str], None]


@dataclass
class SessionConfig:
    """What to connect to: `broker_url` None means the embedded default (broker + virtual fleet)."""

    broker_url: str | None = None
    devices: int = DEFAULT_DEVICE_COUNT
    username: str | None = None
    password: str | None = None
    seed: int = 0
    # persist every device's telemetry (app.services.telemetry_history) for fit checks and trends
    keep_history: bool = True

    @property
    def embedded(self) -> bool:
        return self.broker_url is None


class AppSession:
    """Start with `start(progress)`; then `.connection`, `.monitor`, `.broker_url`, `.fleet`."""

    def __init__(self, config: SessionConfig | None = None) -> None:
        self.config = config or SessionConfig()
        self.broker = None
        self.fleet = None
        self.connection = None
        self.monitor = None
        self.history = None  # TelemetryHistory fed by the monitor (config.keep_history)
        self.broker_url: str | None = None
        self._target = None  # the broker URL with its credentials, for further connections
        self._withdraw: Callable[[], None] = lambda: None  # removes the embedded broker's announcement
        self.serial: dict[str, object] = {}  # port -> SerialChannel attached to the fleet monitor
        self._serial_baud: dict[str, int] = {}  # port -> the baud rate it was attached with
        self._serial_device: dict[str, str] = {}  # port -> id of the device that announced itself there
        self._serial_lock = threading.Lock()  # attach/detach against the reopen watcher
        self.serial_watch_passes = 0  # finished passes of the reopen watcher: what a test can wait for
        self._serial_watch: threading.Thread | None = None
        self._closed = threading.Event()

    @property
    def embedded(self) -> bool:
        return self.config.embedded

    @property
    def closed(self) -> bool:
        """True once close() has begun (it stops the parts in order; a second call returns at once)."""
        return self._closed.is_set()

    def start(self, progress: ProgressFn | None = None, cancel: threading.Event | None = None) -> AppSession:
        """Bring the session up; raises TinyMLOpsError (never a bare library error) on failure."""
        from app.services.fleet_memory import FleetMemory
        from app.services.fleet_memory import default_path as fleet_memory_path
        from app.services.fleet_monitor import FleetMonitor
        from app.transport.mqtt_link import MqttConnection
        from app.transport.urls import parse_broker_url

        def step(pct: int, text: str) -> None:
            log.info("session: %s", text)
            if progress:
                progress(pct, text)
            if cancel is not None and cancel.is_set():
                from app.domain.errors import Cancelled

                raise Cancelled("start-up cancelled")

        target = None
        try:
            if self.config.embedded:
                from app.transport.broker import EmbeddedBroker

                step(5, "starting the embedded MQTT broker")
                self.broker = EmbeddedBroker()
                self.broker_url = self.broker.start()
                self._withdraw = announce(self.broker_url)  # the command line finds this fleet
            else:
                url = parse_broker_url(self.config.broker_url or "")
                if self.config.username:
                    from dataclasses import replace

                    url = replace(url, username=self.config.username, password=self.config.password)
                target = url
                self.broker_url = str(url)  # shown and recorded: never holds the password
            step(30, f"connecting to {self.address}")
            self._target = target if not self.config.embedded else self.broker_url
            self.connection = MqttConnection(self._target)
            self.connection.connect()  # mqtt_link.CONNECT_TIMEOUT_S
            from app.services import cleanups

            cleanups.finish_in_background(self.connection)  # chunks a failed rollout left (issue 11.14)
            self.monitor = FleetMonitor(self.connection, memory=FleetMemory(fleet_memory_path()))
            from app.transport.broker_probe import capabilities_of

            # what this broker supports (logged in words; the status bar's tooltip): in the background,
            # start-up does not wait for it
            known = self.monitor.memory.known() if self.monitor.memory is not None else {}
            site = next((e["site"] for e in known.values() if e.get("site")), None)
            threading.Thread(target=capabilities_of, args=(self.connection,), kwargs={"site": site},
                             name="broker-probe", daemon=True).start()
            if self.config.keep_history:
                from app.services.telemetry_history import TelemetryHistory

                self.history = TelemetryHistory()  # feature vectors for the fit check (app.deploy.fit_check)
                self.monitor.add_listener(self.history.listener)
            if self.config.embedded:
                from app.fleet.fleet import VirtualFleet

                step(50, f"starting {self.config.devices} virtual devices")
                from app.trust.keys import KeyStore

                keys = KeyStore()
                keys.ensure()  # the embedded fleet trusts this operator: its signed versions deploy
                self.fleet = VirtualFleet(self.broker_url, self.config.devices, seed=self.config.seed,
                                          trust=keys.public_keys())
                self.fleet.start()
            step(100, f"connected to {self.address}")
            return self
        except TinyMLOpsError:
            self.close()
            raise
        except Exception as exc:  # library errors become one domain error with a sentence
            log.exception("session start failed")
            self.close()
            raise LinkError(f"could not start the session: {exc}") from exc

    @property
    def broker_capabilities(self):
        """The broker probe's result (app.transport.broker_probe), None until it finished."""
        from app.transport.broker_probe import capabilities_of

        return capabilities_of(self.connection, run=False) if self.connection is not None else None

    def open_connection(self, client_id: str | None = None):
        """A further, connected MqttConnection to the same broker (same credentials), for one job.

        Deployments and rollbacks use their own: they subscribe to status topics the fleet
        monitor's connection already has, and a connection drops a payload repeated on the same
        topic within DUPLICATE_WINDOW_S, which would hide a device's freshly re-sent retained
        HELLO from them."""
        from app.transport.mqtt_link import MqttConnection

        if self._target is None:
            raise LinkError("not connected to a broker")
        return MqttConnection(self._target, client_id=client_id).connect()

    def attach_serial(self, port: str, baud: int) -> None:
        """Open a device's serial port and show the device in the fleet (FleetMonitor.attach_serial)."""
        from app.services.channel import SerialChannel

        if self.monitor is None:
            raise LinkError("the session is not started")
        with self._serial_lock:
            if port in self.serial:
                raise LinkError(f"{port} is already attached")
            channel = SerialChannel.open(port, baud)
            self.serial[port] = channel
            self._serial_baud[port] = int(baud)
            channel.on_packet(lambda packet, port=port: self._note_serial_device(port, packet))  # before its HELLO
            self.monitor.attach_serial(channel)
            if self._serial_watch is None:
                self._serial_watch = threading.Thread(target=self._reopen_vanished_ports, name="serial-reopen",
                                                      daemon=True)
                self._serial_watch.start()

    def _note_serial_device(self, port: str, packet) -> None:
        from app.protocol.messages import Hello

        if isinstance(packet.msg, Hello):
            self._serial_device[port] = packet.msg.device_id

    def serial_port_of(self, device_id: str) -> tuple[str, int] | None:
        """(port, baud) of the attached port `device_id` announced itself on, or None."""
        for port, device in list(self._serial_device.items()):
            baud = self.attached_baud(port)
            if device == device_id and baud is not None:
                return port, baud
        return None

    def attached_baud(self, port: str) -> int | None:
        """The baud rate `port` was attached with, or None when it is not attached."""
        return self._serial_baud.get(port) if port in self.serial else None

    def detach_serial(self, port: str) -> bool:
        """Close an attached port (before a serial deployment opens it itself); True if it was attached."""
        with self._serial_lock:
            channel = self.serial.pop(port, None)
            self._serial_device.pop(port, None)
            self._serial_baud.pop(port, None)
        if channel is None:
            return False
        try:
            channel.close()
        except Exception:
            log.exception("closing %s", port)
        return True

    def _reopen_vanished_ports(self) -> None:
        """An attached port stays attached when it vanishes: it is reopened as soon as it is back,
        and the device re-announces itself (the fleet shows it offline meanwhile)."""
        while not self._closed.wait(SERIAL_REOPEN_S):
            with self._serial_lock:
                for port, channel in list(self.serial.items()):
                    link = channel.link
                    if link.is_open:
                        continue
                    try:
                        link.open()
                    except LinkError as exc:
                        log.debug("serial port %s still gone: %s", port, exc)
                    else:
                        log.info("serial port %s is back", port)
                self.serial_watch_passes += 1

    def serial_bad_frames(self) -> dict[str, dict[str, int]]:
        """Per attached port, what its device sent that was dropped, by reason: frames that were
        line noise (SerialLink.BAD_FRAME_COUNTERS) and frames that held no protocol message
        ("undecodable (<reason>)", from the channel). Counters restart when a port is reopened."""
        out: dict[str, dict[str, int]] = {}
        for port, channel in list(self.serial.items()):
            link_counters = channel.link.counters
            bad = {k: v for k, v in link_counters.items() if k in channel.link.BAD_FRAME_COUNTERS and v}
            for k, v in dict(channel.counters).items():
                if k.startswith("bad_") and v:
                    bad[f"undecodable ({k[4:]})"] = v
            out[port] = bad
        return out

    @property
    def address(self) -> str:
        """`host:port` of the broker, for the status bar (never the password)."""
        if not self.broker_url:
            return "-"
        from app.transport.urls import parse_broker_url

        return parse_broker_url(self.broker_url).address

    def close(self) -> None:
        """Stop everything this session started (idempotent)."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._withdraw()
        for port in list(self.serial):
            self.detach_serial(port)
        for name in ("fleet", "monitor", "history", "connection", "broker"):
            part = getattr(self, name)
            if part is None:
                continue
            try:
                part.stop() if name in ("fleet", "broker") else part.close()
            except Exception:
                log.exception("session: error while stopping the %s", name)


@dataclass
class SerialRelease:
    """What `serial_port_released` did: `reattach_error` says why the port could not be attached again."""

    port: str
    released: bool = False
    reattach_error: str | None = None


@contextlib.contextmanager
def serial_port_released(session: AppSession | None, port: str, baud: int) -> Iterator[SerialRelease]:
    """Hand a port the fleet view holds open to a job that opens it itself (a serial deployment,
    rollback or confirmation), and attach it again afterwards with the baud rate it had (`baud` when
    it was not attached). A port that cannot be attached again (it vanished meanwhile) does not undo
    the job's outcome: the reason is in `reattach_error`, for the caller to show."""
    release = SerialRelease(port)
    attached = session.attached_baud(port) if session is not None else None
    attached_baud = attached or baud
    release.released = session is not None and session.detach_serial(port)
    try:
        yield release
    finally:
        if release.released:
            try:
                session.attach_serial(port, attached_baud)
            except TinyMLOpsError as exc:
                log.warning("could not attach %s again: %s", port, exc)
                release.reattach_error = str(exc)
