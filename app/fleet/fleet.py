"""Many virtual devices in one process, cheaply: one scheduler thread ticks them all.

Device ids are `sim-001`, `sim-002`, ...; locations are spread over two sites and several lines
(`plant-a/line-1/pump-1`); profiles vary (mostly the MLPerf Tiny reference board); a few devices
start with a fault so a fresh fleet shows a red one. Each device talks MQTT (its own paho client,
with its own last will, as a real node) and, with `serial=True`, also owns a pty.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from app.domain import paths
from app.domain.errors import ModelError
from app.domain.profiles import get_profile
from app.fleet.device import VirtualDevice
from app.fleet.mqtt_device import MqttDevice
from app.fleet.serial_device import SerialDevice
from app.protocol.codes import FaultMask

log = logging.getLogger(__name__)

# The scheduler ticks every device this often: fine enough for 256-sample stream windows (80 ms).
TICK_S = 0.05
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
        raise ModelError(f"factory model {path} is missing; build it with `python -m app.ml.factory` "
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
                 faults: dict[str, tuple[int, float]] | None = None, factory_image: bytes | None = None) -> None:
        if count < 1:
            raise ValueError("a fleet needs at least one device")
        if broker_url is None and not serial:
            raise ValueError("a fleet needs a broker URL, serial ptys, or both")
        image = factory_image if factory_image is not None else load_factory_image()
        self.broker_url = broker_url
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
                                shaft_hz=plan["shaft_hz"], fault_mask=mask, severity=severity, now=now)
            self.devices.append(dev)
            if broker_url is not None:
                self._mqtt.append(MqttDevice(dev, broker_url))
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

    def mqtt_adapter(self, device_id: str) -> MqttDevice:
        return next(a for a in self._mqtt if a.device.device_id == device_id)

    def start(self, connect_timeout: float = 10.0) -> VirtualFleet:
        for adapter in self._serial:
            adapter.start()
        for adapter in self._mqtt:
            adapter.start()
        deadline = time.monotonic() + connect_timeout
        for adapter in self._mqtt:
            if not adapter.connected.wait(max(0.0, deadline - time.monotonic())):
                log.warning("%s: not connected to the broker yet (paho keeps trying)", adapter.device.device_id)
        self._thread = threading.Thread(target=self._run, name="fleet-scheduler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        adapters = [*self._mqtt, *self._serial]
        next_tick = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            for adapter in adapters:
                try:
                    adapter.pump(now)
                except Exception:  # one broken device must not stop the fleet
                    log.exception("%s: tick failed", adapter.device.device_id)
            next_tick += TICK_S
            delay = next_tick - time.monotonic()
            if delay < -1.0:  # fell far behind (suspended): skip ahead instead of bursting
                next_tick = time.monotonic()
            self._stop.wait(max(0.0, delay))

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5.0)
        for adapter in self._mqtt:
            adapter.stop()
        for adapter in self._serial:
            adapter.stop()

    def __enter__(self) -> VirtualFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
