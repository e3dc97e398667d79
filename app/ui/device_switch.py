"""Roll back or confirm a device's model from the GUI, over the transport the fleet shows it on: a
device attached over serial is reached through its port (the fleet view releases it meanwhile and
attaches it again after), every other device over MQTT on a connection of its own."""

from __future__ import annotations

from app.ui import workers
from app.ui.context import PageContext


def switch_model(ctx: PageContext, device_id: str, what: str) -> workers.Worker | None:
    """Roll back ("rollback") or confirm a trial ("confirm") on `device_id` in a worker; the outcome
    goes to the events and the latency dashboard. There must be a session (ctx.session())."""
    from app.deploy import api
    from app.services.app_session import serial_port_released

    session = ctx.session()
    fn = api.rollback if what == "rollback" else api.confirm
    record = ctx.fleet.record(device_id)
    serial = None
    if record is not None and record.transport == "serial":
        serial = session.serial_port_of(device_id)
        if serial is None:
            ctx.notify("error", device_id, f"{what} not possible: the device's serial port is not "
                          "attached (Fleet ▸ Attach serial device)")
            return None

    def job(_progress, _cancel):
        if serial is not None:
            port, baud = serial
            with serial_port_released(session, port, baud) as release:
                res = fn(device_id, via="serial", port=port, baud=baud)
            return res, release.reattach_error
        connection = session.open_connection()
        try:
            return fn(device_id, via="mqtt", connection=connection, broker=session.broker_url), None
        finally:
            connection.close()

    def result(outcome) -> None:
        res, reattach_error = outcome
        if res.ok:
            word = "rolled back to" if what == "rollback" else "confirmed"
            ctx.notify("ok", device_id, f"{word} {res.model_name}@{res.model_version}")
        else:
            ctx.notify("error", device_id, f"{what} failed: {res.error_message}")
        if reattach_error:
            ctx.notify("warning", device_id, f"serial port {serial[0]} not attached again: "
                          f"{reattach_error}; reconnect it, then Fleet ▸ Attach serial device")
        ctx.deployments_changed()

    via = f"serial port {serial[0]}" if serial else "MQTT"
    ctx.show_status(f"{what} {device_id} over {via}…")
    worker = workers.run_in_thread(job, name=what, on_result=result,
                                   on_error=lambda exc: ctx.notify("error", device_id,
                                                                      f"{what} failed: {workers.error_text(exc)}"))
    ctx.track_job(worker, what)
    return worker
