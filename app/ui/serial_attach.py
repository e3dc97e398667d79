"""Fleet > Attach serial device: open a port in the session (in a worker: opening a USB adapter
can block) so the device on it shows in the fleet with transport "serial"."""

from __future__ import annotations

from PySide6.QtWidgets import QInputDialog, QWidget

from app.ui import workers
from app.ui.context import PageContext


def attach_serial(ctx: PageContext, port: str, baud: int | None = None) -> workers.Worker | None:
    """Attach `port` at `baud` (the settings' rate when None); the outcome goes to notify. The
    caller checks there is a session."""
    session = ctx.session()
    if not port or session is None:
        return None
    baud = int(baud or ctx.settings().baud)
    return workers.run_in_thread(
        lambda _p, _c: session.attach_serial(port, baud), name="attach-serial",
        on_result=lambda _r: ctx.notify("ok", "", f"serial port {port} attached ({baud} baud)"),
        on_error=lambda exc: ctx.notify("error", "", f"could not attach {port}: {workers.error_text(exc)}"))


def ask_port(parent: QWidget) -> str | None:
    """The port the operator picks or types (the ports the OS lists are offered), or None."""
    from app.transport.discovery import list_serial_ports

    ports = [p.device for p in list_serial_ports()]
    port, ok = QInputDialog.getItem(parent, "Attach serial device", "Serial port (or a pty path / socket://):",
                                    ports or [""], 0, True)
    return port.strip() if ok and port.strip() else None
