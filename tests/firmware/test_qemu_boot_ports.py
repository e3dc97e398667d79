"""The QEMU boot helper survives the race every free-port pick has: another worker's broker or
emulator takes the port before QEMU binds it. QEMU exits "Address already in use"; the helper starts
it again on a new port instead of failing a conformance scenario (or, worse, talking to whatever
listens there)."""

from __future__ import annotations

import socket

from app.protocol import messages as m
from tests.firmware.helpers import Device
from tests.fixtures import qemu


def test_a_port_taken_before_qemu_binds_it_gets_a_new_port(firmware_elf, monkeypatch):
    with socket.socket() as squatter:  # a real listener on the first port the helper will pick
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        picks = iter([taken])
        real_pick = qemu._free_port
        monkeypatch.setattr(qemu, "_free_port", lambda: next(picks, None) or real_pick())

        booting = qemu.boot(firmware_elf)
        device = next(booting)
        try:
            assert device.port != taken
            with Device(device.url) as dev:
                assert isinstance(dev.request(m.GetInfo()).msg, m.Hello)
        finally:
            booting.close()
    assert device.process.poll() is not None  # closing the generator stopped the emulator
