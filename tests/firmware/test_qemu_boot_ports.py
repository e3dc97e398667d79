"""The QEMU boot helper survives the race every free-port pick has: another worker's broker or
emulator takes the port before QEMU binds it. QEMU exits "Address already in use"; the helper starts
it again on a new port instead of failing a conformance scenario (or, worse, talking to whatever
listens there)."""

from __future__ import annotations

import socket
import threading

import pytest

from app.protocol import messages as m
from tests.firmware.helpers import Device
from tests.fixtures import qemu


def _close_every_connection(server: socket.socket, stop: threading.Event) -> None:
    server.settimeout(0.1)
    while not stop.is_set():
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        conn.close()


@pytest.mark.parametrize("squatter", ["silent", "closing"])
def test_a_port_taken_before_qemu_binds_it_gets_a_new_port(firmware_elf, monkeypatch, squatter):
    """A silent squatter never answers the boot probe; a closing one ends each connection at once."""
    stop = threading.Event()
    with socket.socket() as server:  # a real listener on the first port the helper will pick
        server.bind(("127.0.0.1", 0))
        server.listen()
        taken = server.getsockname()[1]
        closer = threading.Thread(target=_close_every_connection, args=(server, stop), daemon=True)
        if squatter == "closing":
            closer.start()
        picks = iter([taken])
        real_pick = qemu._free_port
        monkeypatch.setattr(qemu, "_free_port", lambda: next(picks, None) or real_pick())

        booting = qemu.boot(firmware_elf)
        try:
            device = next(booting)
            assert device.port != taken
            with Device(device.url) as dev:
                assert isinstance(dev.request(m.GetInfo()).msg, m.Hello)
        finally:
            booting.close()
            stop.set()
            if closer.is_alive():
                closer.join()
    assert device.process.poll() is not None  # closing the generator stopped the emulator
