"""Device implementations under test: every scenario in this package runs against each of them.

`python`: the virtual device (app/fleet/device.py) on its paho client; `c`: the firmware's C core
as a POSIX process (firmware/ports/posix) on libmosquitto. Both on a fresh real Mosquitto per
test (retained statuses of one test never reach the next), with the stm32l4r5 profile (the C
engine's reference board); unprovisioned (they take unsigned images) unless a module's
`provisioned` fixture says otherwise (then they trust the test's own operator key).

A scenario marked `@pytest.mark.links("mqtt", "pty")` also runs over a serial line: `python-pty`
(the virtual device on the pty `tinymlops sim --serial` makes) and `c-pty` (the POSIX port with
`--pty`), reached through the host's serial transport (`host` is then a SerialHost). Unmarked
scenarios are MQTT only (retained status, last will, broker restarts, pulls: nothing a serial line has).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.fleet import c_device
from app.fleet.fleet import VirtualFleet
from app.trust.keys import KeyStore
from tests.conformance.host import Host, SerialHost
from tests.fixtures.brokers import MosquittoProcess

PROFILE = "stm32l4r5"
IMPLEMENTATIONS = ("python", "c")
# Links a scenario runs over unless its `links` marker says otherwise.
DEFAULT_LINKS = ("mqtt",)
# A pty device is up within milliseconds; a loaded machine (ASan build) gets this long.
SERIAL_READY_S = 20.0


@dataclass
class DeviceUnderTest:
    impl: str
    url: str | None  # None on a serial link
    device_id: str
    site: str
    kill: Callable[[], None]  # vanish without a word: the broker's last will speaks
    broker: MosquittoProcess | None  # this test's own broker: a scenario may restart it
    link: str = "mqtt"
    port: str | None = None  # the pty a serial host opens


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "links(*names): links a conformance scenario runs over (mqtt, pty)")


def pytest_generate_tests(metafunc) -> None:
    """Parametrize `dut` by implementation and, for scenarios marked `links`, by link: the ids of the
    MQTT runs stay `python`/`c`, the serial ones are `python-pty`/`c-pty`."""
    if "dut" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("links")
    links = marker.args if marker else DEFAULT_LINKS
    params = [(impl, link) for link in links for impl in IMPLEMENTATIONS]
    metafunc.parametrize("dut", params, indirect=True,
                         ids=[impl if link == "mqtt" else f"{impl}-{link}" for impl, link in params])


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
    """The device on a pty: the virtual fleet's (as `tinymlops sim --serial`) or the POSIX port's `--pty`."""
    if impl == "python":
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


@pytest.fixture
def host(dut) -> Iterator[Host]:
    h = SerialHost(dut.port, dut.device_id) if dut.link == "pty" else Host(dut.url, dut.site, dut.device_id)
    try:
        yield h
    finally:
        h.close()
