"""Many virtual devices in one process, cheaply: a fixed handful of threads, whatever the count.

Device ids are `sim-001`, `sim-002`, ...; locations are spread over two sites and several lines
(`plant-a/line-1/pump-1`); profiles vary (mostly the MLPerf Tiny reference board); a few devices
start with a fault so a fresh fleet shows a red one. Each device talks MQTT (its own paho client,
with its own last will, as a real node) and, with `serial=True`, also owns a pty.

Threads: one scheduler ticks every device, one `NetLoop` network thread plus its connector thread
serve every MQTT client, and a few workers handle commands (app/fleet/netloop.py). The scheduler
ticks a device only when something is due: once per telemetry period, locked to the device's own
telemetry deadline (a tick that brings telemetry plans the next one period later), and every
`TICK_S` while it streams. First ticks are spread over one period so a large fleet's telemetry
(and CPU load) is spread evenly instead of arriving in one burst each second.

`telemetry_period_s` above the devices' 1 s makes an idle device wake once per that period, like a
duty-cycled node: one telemetry per wake (the engine sends one per tick when overdue) and at most
`device.MAX_CATCHUP_S` of signal synthesised per wake, so a 1,000-device fleet costs a fraction of
the CPU. A streaming device is still ticked every `TICK_S` (and so reports at 1 Hz).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from app.domain import paths
from app.domain.errors import ModelError
from app.domain.profiles import get_profile
from app.fleet.device import TELEMETRY_PERIOD_S, Outgoing, VirtualDevice
from app.fleet.mqtt_device import MqttDevice
from app.fleet.netloop import MAX_CONNECTING, NetLoop
from app.fleet.serial_device import SerialDevice
from app.protocol.codes import DeviceState, FaultMask
from app.protocol.topics import TELEMETRY

log = logging.getLogger(__name__)

# The scheduler wakes this often; a streaming device is ticked at this rate, fine enough for
# 256-sample stream windows (80 ms). Serial-only devices are always ticked at this rate.
TICK_S = 0.05
# A device whose telemetry phase is unknown (just started, rebooted) is ticked this often until its
# next telemetry shows the phase: at most this much late, once.
PHASE_PROBE_S = 0.2
# Spread of the first ticks: golden-ratio steps cover a period evenly for any fleet size.
_GOLDEN = 0.6180339887498949
# A graceful stop waits at most this long, in total, for every device's OFFLINE status to be taken.
OFFLINE_ALL_TIMEOUT_S = 10.0
# Waiting for devices to connect at start: this long at least, plus this much per device
# (connects go MAX_CONNECTING at a time; a loaded machine takes ~5 ms a device).
CONNECT_TIMEOUT_MIN_S = 10.0
CONNECT_TIMEOUT_PER_DEVICE_S = 0.02
# Profiles handed out in turn: mostly the MLPerf Tiny reference board, some of each other class.
PROFILE_CYCLE = ("stm32l4r5", "esp32-wroom-32", "stm32l4r5", "nrf52840", "stm32l4r5", "stm32f446")
SITES = ("plant-a", "plant-b")
LINES_PER_SITE = 3
MACHINES = ("pump", "fan", "motor", "compressor")
# Every this-many-th device (starting with the 4th) boots with a fault, so the fleet shows red.
FAULTY_EVERY = 7
FAULTY_OFFSET = 3
DEFAULT_FAULTS = ((FaultMask.BEARING_OUTER, 0.7), (FaultMask.IMBALANCE, 0.8), (FaultMask.MISALIGNMENT, 0.8))


def factory_model_path() -> Path:
    return paths.resources_dir() / "models" / "factory.tmlm"


def load_factory_image(path: Path | None = None) -> bytes:
    """The factory model every virtual device boots with; a clear error when it is missing."""
    path = path or factory_model_path()
    if not path.is_file():
        raise ModelError(f"factory model {path} is missing; build it with `python -m app.fleet.factory` "
                         "(a device never runs without a model)")
    return path.read_bytes()


def device_plan(index: int) -> dict:
    """Identity of the index-th device (0-based): id, location, profile, machine speed, boot fault."""
    site = SITES[index % len(SITES)]
    line = (index // len(SITES)) % LINES_PER_SITE + 1
    machine = MACHINES[(index // (len(SITES) * LINES_PER_SITE)) % len(MACHINES)]
    number = index // (len(SITES) * LINES_PER_SITE * len(MACHINES)) + 1
    fault = (0, 0.0)
    if index % FAULTY_EVERY == FAULTY_OFFSET:
        fault = DEFAULT_FAULTS[(index // FAULTY_EVERY) % len(DEFAULT_FAULTS)]
    return {
        "device_id": f"sim-{index + 1:03d}",
        "location": f"{site}/line-{line}/{machine}-{number}",
        "profile": PROFILE_CYCLE[index % len(PROFILE_CYCLE)],
        "shaft_hz": 24.0 + (index * 0.77) % 6.0,
        "fault": fault,
    }


class VirtualFleet:
    """`count` virtual devices on a broker (and ptys with `serial=True`); start/stop or `with`."""

    def __init__(self, broker_url: str | None, count: int, seed: int = 0, serial: bool = False,
                 baud: int | None = None, profiles: list[str] | None = None,
                 faults: dict[str, tuple[int, float]] | None = None, factory_image: bytes | None = None,
                 telemetry_period_s: float = TELEMETRY_PERIOD_S, max_connecting: int = MAX_CONNECTING,
                 caps: dict[str, int] | None = None, trust: list[bytes] | None = None) -> None:
        """`trust`: raw Ed25519 public keys every device's trust store holds (PROTOCOL.md 6.2);
        None leaves them unprovisioned (they take unsigned images)."""
        if count < 1:
            raise ValueError("a fleet needs at least one device")
        if not telemetry_period_s >= TELEMETRY_PERIOD_S:
            raise ValueError(f"telemetry period must be at least the devices' {TELEMETRY_PERIOD_S} s")
        self.telemetry_period_s = float(telemetry_period_s)
        if broker_url is None and not serial:
            raise ValueError("a fleet needs a broker URL, serial ptys, or both")
        image = factory_image if factory_image is not None else load_factory_image()
        self.broker_url = broker_url
        self.net = NetLoop("fleet-net", max_connecting=max_connecting)
        self.devices: list[VirtualDevice] = []
        self._mqtt: list[MqttDevice] = []
        self._serial: list[SerialDevice] = []
        faults = dict(faults or {})
        now = time.monotonic()
        for i in range(count):
            plan = device_plan(i)
            profile = get_profile(profiles[i % len(profiles)] if profiles else plan["profile"])
            mask, severity = faults.pop(plan["device_id"], plan["fault"])
            dev = VirtualDevice(plan["device_id"], plan["location"], profile, image, seed=seed * 10_000 + i,
                                shaft_hz=plan["shaft_hz"], fault_mask=mask, severity=severity, now=now, trust=trust,
                                **({"caps": caps[plan["device_id"]]} if caps and plan["device_id"] in caps else {}))
            self.devices.append(dev)
            if broker_url is not None:
                self._mqtt.append(MqttDevice(dev, broker_url, self.net))
            if serial:
                self._serial.append(SerialDevice(dev, baud))
        if faults:
            raise ValueError(f"faults given for unknown devices: {', '.join(faults)}")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def serial_ports(self) -> dict[str, str]:
        """Device id -> pty path the host opens."""
        return {s.device.device_id: s.slave_path for s in self._serial}

    def device(self, device_id: str) -> VirtualDevice:
        for dev in self.devices:
            if dev.device_id == device_id:
                return dev
        raise KeyError(device_id)

    @property
    def connected_count(self) -> int:
        """MQTT devices connected to the broker right now."""
        return sum(a.connected.is_set() for a in self._mqtt)

    def mqtt_adapter(self, device_id: str) -> MqttDevice:
        return next(a for a in self._mqtt if a.device.device_id == device_id)

    def start(self, connect_timeout: float | None = None) -> VirtualFleet:
        """Open ptys and connect every device (waiting up to `connect_timeout`), then start ticking."""
        if connect_timeout is None:
            connect_timeout = CONNECT_TIMEOUT_MIN_S + CONNECT_TIMEOUT_PER_DEVICE_S * len(self._mqtt)
        for adapter in self._serial:
            adapter.start()
        if self._mqtt:
            self.net.start()
        for adapter in self._mqtt:
            adapter.start()
        deadline = time.monotonic() + connect_timeout
        waiting = [a.device.device_id for a in self._mqtt
                   if not a.connected.wait(max(0.0, deadline - time.monotonic()))]
        if waiting:
            log.warning("%d of %d devices not connected to the broker after %.0f s (they keep trying): %s",
                        len(waiting), len(self._mqtt), connect_timeout, ", ".join(waiting[:10]))
        self._thread = threading.Thread(target=self._run, name="fleet-scheduler", daemon=True)
        self._thread.start()
        return self

    def _slots(self) -> list[_Slot]:
        """One slot per device, ticking through its MQTT adapter if it has one (else its pty)."""
        mqtt = {a.device.device_id: a for a in self._mqtt}
        serial = {a.device.device_id: a for a in self._serial}
        start = time.monotonic()
        slots = []
        for i, dev in enumerate(self.devices):
            adapter = mqtt.get(dev.device_id) or serial[dev.device_id]
            period = self.telemetry_period_s
            slot = _Slot(adapter, start + ((i * _GOLDEN) % 1.0) * period, dev.device_id in mqtt, period)
            if isinstance(adapter, MqttDevice):
                adapter.on_command = slot.wake
            slots.append(slot)
        return slots

    def _run(self) -> None:
        slots = self._slots()
        next_pass = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            for slot in slots:
                if now < slot.next_due:
                    continue
                try:
                    slot.pump(now)
                except Exception:  # one broken device must not stop the fleet
                    log.exception("%s: tick failed", slot.adapter.device.device_id)
                    slot.next_due = now + TICK_S
            next_pass += TICK_S
            delay = next_pass - time.monotonic()
            if delay < -1.0:  # fell far behind (suspended): skip ahead instead of bursting
                next_pass = time.monotonic()
            self._stop.wait(max(0.0, delay))

    def stop(self) -> None:
        """Stop ticking; every MQTT device announces OFFLINE and disconnects; ptys close."""
        self._stop.set()
        if self._thread:
            self._thread.join(5.0)
        infos = [a.announce_offline() for a in self._mqtt]
        deadline = time.monotonic() + OFFLINE_ALL_TIMEOUT_S
        for info in infos:
            if info is None:
                continue
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                pass
        for adapter in self._mqtt:
            adapter.connected.clear()
            adapter.client.disconnect()
        self.net.stop()  # flushes every DISCONNECT, closes the sockets, ends its threads
        for adapter in self._serial:
            adapter.stop()

    def __enter__(self) -> VirtualFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Slot:
    """When one device is ticked next (see the module docstring)."""

    __slots__ = ("adapter", "next_due", "period", "planned", "smart")

    def __init__(self, adapter: MqttDevice | SerialDevice, first_due: float, smart: bool, period: float) -> None:
        self.adapter = adapter
        self.period = period
        self.next_due = first_due
        self.planned: float | None = None  # the tick that will bring the next telemetry
        self.smart = smart  # MQTT adapters report what a tick produced; serial ones tick every TICK_S

    def wake(self) -> None:
        """A command arrived (stream start, reboot...): tick at the next pass and re-plan."""
        self.next_due = 0.0

    def pump(self, now: float) -> None:
        if not self.smart:
            self.adapter.pump(now)
            self.next_due = now + TICK_S
            return
        out: list[Outgoing] = self.adapter.pump(now)
        period = self.period
        if any(channel == TELEMETRY for channel, _ in out):
            planned = self.planned
            # locked: the device's next deadline is at most one period after this planned tick
            self.planned = planned + period if planned is not None and 0.0 <= now - planned < period else now + period
        elif self.planned is not None and now >= self.planned:
            self.planned = None  # the phase moved (a reboot): probe until telemetry shows it again
        due = self.planned if self.planned is not None else now + PHASE_PROBE_S
        if self.adapter.device.hello(now).state == DeviceState.STREAMING:
            due = min(due, now + TICK_S)
        self.next_due = due
