"""Devices that run the firmware's C core: processes of the POSIX port (firmware/ports/posix).

Each `CDevice` is one `tinymlops-device` process on the broker, with its own flash file (model
slots and journal, kept across restarts of the process as flash is across reboots) and its own last
will, so the GUI, the CLI and the tests see it exactly as they see a board. `CDeviceFleet` starts N
of them with the identities of the virtual fleet's plan (`device_plan`), ids `c-001`, `c-002`, ...
so they can run beside the Python virtual devices on one broker.

Why processes and not a library binding: the point of the port is that the real core, built as
firmware is, answers the protocol; a crash or a power cut (`power_cut_at`) is then a process exit,
as on a device, and the broker's last will announces it.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from app.domain.errors import LinkError, ModelError, ProtocolError
from app.domain.profiles import C_ENGINE_OPS, get_profile
from app.fleet.fleet import device_plan, factory_model_path
from app.protocol import messages as m
from app.protocol import topics
from app.protocol.codes import DeviceState
from app.transport.credentials import PASSWORD_ENV, password_for
from app.transport.mqtt_link import MqttConnection
from app.transport.urls import parse_broker_url

log = logging.getLogger(__name__)

# Where a source checkout builds the port (firmware/README.md: the host CMake build).
BUILD_BINARY = Path(__file__).resolve().parents[2] / "firmware" / "build-host" / "ports" / "posix" / "tinymlops-device"
# Set to use another build of the port (a CI artefact, an installed copy).
BINARY_ENV = "TINYMLOPS_C_DEVICE"
# A graceful stop (SIGTERM: OFFLINE status, DISCONNECT) takes well under a second; then SIGKILL.
STOP_TIMEOUT_S = 5.0
# A device's retained ONLINE status appears within a second of its start; a loaded machine with
# many devices starting at once gets this long plus the per-device allowance.
ONLINE_TIMEOUT_MIN_S = 20.0
ONLINE_TIMEOUT_PER_DEVICE_S = 0.2
# How often wait_serial looks for the pty link (it appears within milliseconds of the start).
SERIAL_POLL_S = 0.05
# Profile a C device takes when the plan names one the C engine does not run (the ESP32 runs TFLM).
C_FALLBACK_PROFILE = "stm32l4r5"
# Exit status of a process stopped by the power-cut injector (firmware/ports/posix/file_flash.h).
POWER_CUT_EXIT = 75
# Exit status of a device the broker refused for good: its certificate or login (ports/posix/main.c).
REFUSED_EXIT = 3
# What a certificate or key path of the broker URL says where the device's own id goes (as
# app/transport/mqtt_link.set_tls): one URL gives every device of a fleet its own certificate.
DEVICE_PLACEHOLDER = "{device}"


def broker_args(broker_url: str, device_id: str) -> list[str]:
    """The port's options for a broker URL: `--broker mqtt[s]://host:port` and, from the URL, `--ca`,
    `--cert`, `--key` (`{device}` replaced by `device_id`) and `--username`. Never the password: the
    process takes it from its environment (`device_env`)."""
    url = parse_broker_url(broker_url)
    args = ["--broker", f"{'mqtts' if url.tls else 'mqtt'}://{url.host}:{url.port}"]
    for option, path in (("--ca", url.ca), ("--cert", url.cert), ("--key", url.key)):
        if path:
            args += [option, path.replace(DEVICE_PLACEHOLDER, device_id)]
    if url.username:
        args += ["--username", url.username]
    return args


def device_env(broker_url: str | None) -> dict[str, str] | None:
    """The process environment: ours, plus the broker password (wherever app.transport.credentials
    found it: environment, keyring, this run's prompt) in the one variable the port reads."""
    if broker_url is None:
        return None
    url = parse_broker_url(broker_url)
    password = password_for(url) if url.username else None
    return {**os.environ, PASSWORD_ENV: password} if password is not None else None


def device_binary() -> Path:
    """The POSIX port's executable, or a LinkError that says how to build it."""
    path = Path(os.environ.get(BINARY_ENV) or BUILD_BINARY)
    if not path.is_file() or not os.access(path, os.X_OK):
        raise LinkError(f"C device binary {path} is missing: build it with `cmake -S firmware -B firmware/build-host "
                        f"&& cmake --build firmware/build-host --target tinymlops-device` (needs the Debian "
                        f"package libmosquitto-dev), or point ${BINARY_ENV} at one")
    return path


class CDevice:
    """One POSIX-port device process. `start()` again after `stop()`/`kill()` is a reboot that keeps
    the flash file (the model it was running, a transfer in progress). Its transport is MQTT
    (`broker_url`) or, with `serial=True`, a pty the host opens at `serial_path`."""

    def __init__(self, device_id: str, location: str, broker_url: str | None, workdir: Path, *, serial: bool = False,
                 profile: str = C_FALLBACK_PROFILE, factory_image: Path | None = None, seed: int = 1,
                 shaft_hz: float | None = None, trust: list[bytes] | None = None, binary: Path | None = None) -> None:
        if not topics.valid_id(device_id) or not topics.valid_id(location.split("/", 1)[0]):
            raise ValueError(f"invalid device id or site {device_id!r}, {location!r}: expected [A-Za-z0-9_.-]{{1,64}}")
        if (broker_url is None) == (not serial):
            raise ValueError("a C device speaks MQTT (broker_url) or serial (serial=True): exactly one")
        prof = get_profile(profile)
        if not prof.ops <= C_ENGINE_OPS:
            raise ValueError(f"profile {profile} does not run the C engine; C devices take one that does")
        self.device_id = device_id
        self.location = location
        self.site = location.split("/", 1)[0]
        self.profile = prof
        self.broker_url = broker_url
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.flash_path = self.workdir / f"{device_id}.flash"
        self.log_path = self.workdir / f"{device_id}.log"
        # the device links this path to its pty's slave while it runs (serial=True)
        self.serial_path = self.workdir / f"{device_id}.tty" if serial else None
        self.factory_image = Path(factory_image or factory_model_path())
        if not self.factory_image.is_file():
            raise ModelError(f"factory model {self.factory_image} is missing; "
                             "build it with `python -m app.fleet.factory`")
        self.seed = seed
        self.shaft_hz = shaft_hz
        self.trust = list(trust or [])
        self.binary = binary
        self.process: subprocess.Popen[bytes] | None = None

    def command(self, power_cut_at: int = 0) -> list[str]:
        """The command line that starts this device (documented in firmware/ports/posix/README.md)."""
        link = ["--pty", str(self.serial_path)] if self.serial_path else broker_args(str(self.broker_url),
                                                                                      self.device_id)
        cmd = [str(self.binary or device_binary()), "--id", self.device_id, "--location", self.location,
               *link, "--flash", str(self.flash_path), "--factory", str(self.factory_image),
               "--profile", self.profile.key, "--slot-size", str(self.profile.slot_size),
               "--arena", str(self.profile.arena_budget), "--seed", str(self.seed),
               "--exit-with-parent"]  # no orphaned devices when this process dies
        if self.shaft_hz is not None:
            cmd += ["--shaft-hz", f"{self.shaft_hz:.4f}"]
        for key in self.trust:
            cmd += ["--trust", key.hex()]
        if power_cut_at:
            cmd += ["--power-cut-at", str(power_cut_at)]
        return cmd

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, power_cut_at: int = 0) -> CDevice:
        """Start the process; `power_cut_at` = N makes its N-th flash operation lose power half-way.
        The device ends when the thread that started it ends (Linux's parent-death signal follows
        the thread): start devices from the main thread or another that outlives them."""
        if self.running:
            raise RuntimeError(f"{self.device_id} is already running")
        if self.serial_path is not None:
            self.serial_path.unlink(missing_ok=True)  # a link a killed run left points at a dead pty
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(self.command(power_cut_at), stdin=subprocess.DEVNULL,
                                            stdout=out, stderr=out, env=device_env(self.broker_url))
        log.info("%s: started C device (pid %d)", self.device_id, self.process.pid)
        return self

    def wait(self, timeout: float) -> int:
        """Exit status once the process ends (TimeoutExpired when it does not within `timeout`)."""
        if self.process is None:
            raise RuntimeError(f"{self.device_id} was never started")
        return self.process.wait(timeout)

    def stop(self) -> None:
        """Graceful: the device publishes its OFFLINE status and disconnects."""
        if not self.running:
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("%s: no clean stop within %.0f s; killing it", self.device_id, STOP_TIMEOUT_S)
            self.kill()

    def kill(self) -> None:
        """Power off at once: the broker's last will announces the device OFFLINE."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def wait_serial(self, timeout: float) -> Path:
        """The pty path once the device has opened it; LinkError when the process ends first."""
        if self.serial_path is None:
            raise RuntimeError(f"{self.device_id} speaks MQTT, not serial")
        deadline = time.monotonic() + timeout
        while not self.serial_path.exists():
            if not self.running:
                raise LinkError(f"C device {self.device_id} exited: {self.log_text()[-500:]}")
            if time.monotonic() > deadline:
                raise LinkError(f"C device {self.device_id} opened no pty within {timeout:.0f} s")
            time.sleep(SERIAL_POLL_S)
        return self.serial_path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def wait_online(broker_url: str, devices: list[CDevice], timeout: float) -> dict[str, m.Hello]:
    """Wait until every device's retained status says it is on line; its HELLOs. A device whose
    process ended meanwhile fails at once, with the end of its log."""
    got: queue.Queue[m.Hello] = queue.Queue()
    wanted = {d.device_id: d for d in devices}

    def on_status(_topic: str, payload: bytes) -> None:
        try:
            msg = m.decode(payload).msg
        except ProtocolError:  # anyone may publish a status; a bad one is not ours
            return
        if isinstance(msg, m.Hello) and msg.device_id in wanted and msg.state != DeviceState.OFFLINE:
            got.put(msg)

    conn = MqttConnection(broker_url)
    conn.connect()
    seen: dict[str, m.Hello] = {}
    try:
        for d in devices:
            conn.subscribe(topics.device_topic(d.site, d.device_id, topics.STATUS), on_status)
        deadline = time.monotonic() + timeout
        while len(seen) < len(wanted):
            for d in devices:
                if d.device_id not in seen and not d.running:
                    raise LinkError(f"C device {d.device_id} exited ({d.process.returncode if d.process else '?'}): "
                                    f"{d.log_text()[-500:]}")
            left = deadline - time.monotonic()
            if left <= 0:
                missing = ", ".join(sorted(set(wanted) - set(seen)))
                raise LinkError(f"C devices not on line within {timeout:.0f} s: {missing}")
            try:
                hello = got.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            seen[hello.device_id] = hello
    finally:
        conn.close()
    return seen


class CDeviceFleet:
    """N C devices on one broker, ids `c-001`.., locations and shaft speeds from the fleet plan.
    `monitor_url` is the identity that watches them come on line (default `broker_url`): with a
    plant kit's ACL a device certificate (`{device}` in the URL) cannot read the fleet's status, an
    operator's can."""

    ID_PREFIX = "c-"

    def __init__(self, broker_url: str, count: int, *, seed: int = 0, workdir: Path | None = None,
                 trust: list[bytes] | None = None, factory_image: Path | None = None,
                 monitor_url: str | None = None) -> None:
        if count < 1:
            raise ValueError("a fleet needs at least one device")
        self.broker_url = broker_url
        self.monitor_url = monitor_url or broker_url
        if DEVICE_PLACEHOLDER in self.monitor_url:
            raise ValueError(f"a broker URL with {DEVICE_PLACEHOLDER} gives each device its own certificate, which "
                             "cannot watch the fleet: give an operator identity to watch with (monitor_url)")
        self._own_dir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="tinymlops-c-fleet-"))
        binary = device_binary()
        self.devices: list[CDevice] = []
        for i in range(count):
            plan = device_plan(i)
            profile = plan["profile"] if get_profile(plan["profile"]).ops <= C_ENGINE_OPS else C_FALLBACK_PROFILE
            self.devices.append(CDevice(f"{self.ID_PREFIX}{i + 1:03d}", plan["location"], broker_url, self.workdir,
                                        profile=profile, factory_image=factory_image, seed=seed * 10_000 + i + 1,
                                        shaft_hz=plan["shaft_hz"], trust=trust, binary=binary))

    def start(self, timeout: float | None = None) -> CDeviceFleet:
        """Start every process and wait for their ON LINE status on the broker."""
        for d in self.devices:
            d.start()
        wait = timeout if timeout is not None else \
            ONLINE_TIMEOUT_MIN_S + ONLINE_TIMEOUT_PER_DEVICE_S * len(self.devices)
        try:
            wait_online(self.monitor_url, self.devices, wait)
        except Exception:
            self.stop()
            raise
        return self

    def device(self, device_id: str) -> CDevice:
        for d in self.devices:
            if d.device_id == device_id:
                return d
        raise KeyError(device_id)

    def stop(self) -> None:
        for d in self.devices:
            if d.running:
                assert d.process is not None
                d.process.send_signal(signal.SIGTERM)  # all at once, then wait for each
        for d in self.devices:
            d.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> CDeviceFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
