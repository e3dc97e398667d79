"""Device implementations under test: every scenario in this package runs against each of them.

`python`: the virtual device (app/fleet/device.py) on its paho client; `c`: the firmware's C core
as a POSIX process (firmware/ports/posix) on libmosquitto. Both on a fresh real Mosquitto per
test (retained statuses of one test never reach the next), with the stm32l4r5 profile (the C
engine's reference board); unprovisioned (they take unsigned images) unless a module's
`provisioned` fixture says otherwise (then they trust the test's own operator key).

A scenario marked `@pytest.mark.links("mqtt", "pty")` also runs over a serial line, reached through
the host's serial transport (`host` is then a SerialHost):
  * `python-pty`: the virtual device on the pty `tinymlops sim --serial` makes;
  * `c-pty`: the POSIX port with `--pty`;
  * `qemu-mps2`: the QEMU port's image (firmware/ports/qemu-mps2-an386) on mps2-an386, its UART0;
  * `stm32f4-qemu`: the STM32F4 port's QEMU build (firmware/ports/stm32f4) on netduinoplus2, USART2.
The two images boot under QEMU (tests/fixtures/qemu.py), a fresh emulator per test (a boot takes
well under a second: nothing of one test's device reaches the next), and their UART is QEMU's TCP
socket (`socket://127.0.0.1:PORT`) rather than a pty; each reports its own profile and budgets
(PROTOCOL.md section 7), which the scenarios compare with what DeviceUnderTest expects. Their trust
store is fixed when they are built, so they take no `provisioned` scenario.
Unmarked scenarios are MQTT only (retained status, last will, broker restarts, pulls: nothing a
serial line has).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.domain.profiles import get_profile
from app.fleet import c_device
from app.fleet.fleet import VirtualFleet
from app.trust.keys import KeyStore
from tests.conformance.host import Host, SerialHost
from tests.fixtures.brokers import MosquittoProcess
from tests.fixtures.qemu import STM32F4_QEMU_ARENA_SIZE, STM32F4_QEMU_SLOT_SIZE, QemuDevice, boot, boot_stm32f4

PROFILE = "stm32l4r5"
# Implementations per link: the QEMU images have only their UART.
IMPLEMENTATIONS = {"mqtt": ("python", "c"), "pty": ("python", "c", "qemu-mps2", "stm32f4-qemu")}
# Links a scenario runs over unless its `links` marker says otherwise.
DEFAULT_LINKS = ("mqtt",)
# A pty device is up within milliseconds; a loaded machine (ASan build) gets this long.
SERIAL_READY_S = 20.0


@dataclass(frozen=True)
class QemuImage:
    """A firmware image under QEMU as the conformance suite meets it: what its HELLO says it is
    (its main.c and, for the budgets, PROTOCOL.md section 7), the session fixture that builds it and
    the launcher that boots it."""

    device_id: str
    site: str
    profile: str
    slot_size: int
    ram_budget: int
    elf_fixture: str
    boot: Callable[[Path], Iterator[QemuDevice]]


QEMU_IMAGES = {
    "qemu-mps2": QemuImage("qemu-m4", "lab", "qemu-mps2-an386", get_profile("qemu-mps2-an386").slot_size,
                           get_profile("qemu-mps2-an386").arena_budget, "firmware_elf", boot),
    "stm32f4-qemu": QemuImage("stm32f4-qemu", "lab", "stm32f446", STM32F4_QEMU_SLOT_SIZE, STM32F4_QEMU_ARENA_SIZE,
                              "stm32f4_elf", boot_stm32f4),
}


@dataclass
class DeviceUnderTest:
    impl: str
    url: str | None  # None on a serial link
    device_id: str
    site: str
    kill: Callable[[], None]  # vanish without a word: the broker's last will speaks
    broker: MosquittoProcess | None  # this test's own broker: a scenario may restart it
    link: str = "mqtt"
    port: str | None = None  # the pty (or QEMU's UART socket URL) a serial host opens
    # what the device's HELLO must report: its hardware profile and its real budgets
    profile: str = PROFILE
    slot_size: int = get_profile(PROFILE).slot_size
    ram_budget: int = get_profile(PROFILE).arena_budget


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "links(*names): links a conformance scenario runs over (mqtt, pty)")


def _param_id(impl: str, link: str) -> str:
    if link == "mqtt" or impl in QEMU_IMAGES:  # an image has one link: its name says it
        return impl
    return f"{impl}-{link}"


def pytest_generate_tests(metafunc) -> None:
    """Parametrize `dut` by implementation and, for scenarios marked `links`, by link: the ids of the
    MQTT runs stay `python`/`c`, the serial ones are `python-pty`/`c-pty`/`qemu-mps2`/`stm32f4-qemu`."""
    if "dut" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("links")
    links = marker.args if marker else DEFAULT_LINKS
    params = [(impl, link) for link in links for impl in IMPLEMENTATIONS[link]]
    metafunc.parametrize("dut", params, indirect=True, ids=[_param_id(impl, link) for impl, link in params])


@pytest.fixture
def provisioned() -> bool:
    """Whether the device's trust store holds this operator's key (a module overrides it)."""
    return False


@pytest.fixture
def dut(request, mosquitto_factory, tmp_path, monkeypatch, provisioned) -> Iterator[DeviceUnderTest]:
    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(tmp_path / "data"))  # deployment history and keys per test
    trust = [KeyStore().ensure().public_raw] if provisioned else None
    impl, link = request.param
    if link == "pty":
        yield from _serial_dut(request, impl, tmp_path, trust)
        return
    broker = mosquitto_factory()
    url = broker.url
    if impl == "python":
        fleet = VirtualFleet(url, 1, profiles=[PROFILE], trust=trust).start()
        dev = fleet.devices[0]
        try:
            kill = fleet.mqtt_adapter(dev.device_id).kill
            yield DeviceUnderTest("python", url, dev.device_id, dev.site, kill, broker)
        finally:
            fleet.stop()
    else:
        binary = request.getfixturevalue("c_device_binary")
        dev = c_device.CDevice("c-001", "plant-a/line-1/pump-1", url, tmp_path / "c", profile=PROFILE, binary=binary,
                               trust=trust)
        dev.start()
        try:
            c_device.wait_online(url, [dev], c_device.ONLINE_TIMEOUT_MIN_S)
            yield DeviceUnderTest("c", url, dev.device_id, dev.site, dev.kill, broker)
        finally:
            dev.stop()


def _serial_dut(request, impl: str, tmp_path: Path, trust) -> Iterator[DeviceUnderTest]:
    """The device on a serial line: the virtual fleet's pty (as `tinymlops sim --serial`), the POSIX
    port's `--pty`, or a firmware image's UART under QEMU."""
    if impl in QEMU_IMAGES:
        yield from _qemu_dut(request, impl, trust)
    elif impl == "python":
        fleet = VirtualFleet(None, 1, profiles=[PROFILE], serial=True, trust=trust).start()
        dev = fleet.devices[0]
        try:
            yield DeviceUnderTest("python", None, dev.device_id, dev.site, fleet.stop, None, "pty",
                                  fleet.serial_ports[dev.device_id])
        finally:
            fleet.stop()
    else:
        binary = request.getfixturevalue("c_device_binary")
        dev = c_device.CDevice("c-001", "plant-a/line-1/pump-1", None, tmp_path / "c", serial=True, profile=PROFILE,
                               binary=binary, trust=trust)
        dev.start()
        try:
            port = str(dev.wait_serial(SERIAL_READY_S))
            yield DeviceUnderTest("c", None, dev.device_id, "plant-a", dev.kill, None, "pty", port)
        finally:
            dev.stop()


def _qemu_dut(request, impl: str, trust) -> Iterator[DeviceUnderTest]:
    """A freshly booted image (its model store empty: it installs its factory model), answering
    GET_INFO before the scenario starts."""
    image = QEMU_IMAGES[impl]
    if trust is not None:
        pytest.fail(f"{impl}: the image's trust store is set when it is built (make TRUST_KEYS=...), "
                    "not by the test: no provisioned scenario for it")
    elf = request.getfixturevalue(image.elf_fixture)
    with contextlib.contextmanager(image.boot)(elf) as qemu:
        yield DeviceUnderTest(impl, None, image.device_id, image.site, qemu.process.kill, None, "pty", qemu.url,
                              image.profile, image.slot_size, image.ram_budget)


@pytest.fixture
def host(dut) -> Iterator[Host]:
    h = SerialHost(dut.port, dut.device_id) if dut.link == "pty" else Host(dut.url, dut.site, dut.device_id)
    try:
        yield h
    finally:
        h.close()
