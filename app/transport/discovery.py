"""Serial port discovery through pyserial's `list_ports` (USB CDC, FTDI, CP210x, ...)."""

from __future__ import annotations

from dataclasses import dataclass

from serial.tools import list_ports


@dataclass(frozen=True)
class PortInfo:
    device: str
    description: str
    hwid: str
    vid: int | None = None
    pid: int | None = None
    serial_number: str | None = None
    manufacturer: str | None = None

    @property
    def usb(self) -> bool:
        return self.vid is not None


def list_serial_ports() -> list[PortInfo]:
    """Every serial port the OS knows, USB ones first, then by device path."""
    ports = [
        PortInfo(device=p.device, description=p.description or "", hwid=p.hwid or "", vid=p.vid, pid=p.pid,
                 serial_number=p.serial_number, manufacturer=p.manufacturer)
        for p in list_ports.comports()
    ]
    return sorted(ports, key=lambda p: (not p.usb, p.device))
