"""A real device on a serial port answers the protocol (run: pytest --hardware --port PORT
[--board PROFILE] [--baud N] tests/hardware). Skipped unless --hardware is given."""

from __future__ import annotations

import pytest

from app.deploy.links import serial_device
from app.domain.profiles import PROFILES

pytestmark = pytest.mark.hardware


def test_device_introduces_itself(hardware_port, hardware_board, hardware_baud):
    with serial_device(hardware_port, hardware_baud) as link:
        hello = link.hello
    assert hello.device_id, "the device sent an empty id"
    assert hello.profile in PROFILES, f"unknown profile {hello.profile!r}"
    if hardware_board is not None:
        assert hello.profile == hardware_board, f"{hardware_port} is a {hello.profile}, not a {hardware_board}"
