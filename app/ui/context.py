"""What a page may use of the window, handed to it instead of the window itself.

Pages (models, deploy wizard, rollback/confirm, latency) used to reach through the main window for
whatever they needed (`main.events.model.add`, `main.fleet_model`, `main.session`); this narrow
object names those needs, so a page can be built and tested against it and the window stays free
to change how it lays things out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.services.app_session import AppSession
    from app.ui.fleet_model import FleetModel
    from app.ui.settings import Settings
    from app.ui.workers import Worker

# notify(level, device, text): level is "ok", "info", "warning" or "error"; device may be "".
NotifyFn = Callable[[str, str, str], None]


@dataclass(frozen=True)
class PageContext:
    """The services a page works with. Callables where the value changes while the window lives
    (a new session after Reconnect, new settings after the Settings dialog)."""

    notify: NotifyFn  # a job's outcome: events panel and status bar (errors also in the banner)
    fleet: FleetModel  # the fleet as the window shows it: device ids, records, states, deploying marks
    session: Callable[[], AppSession | None]  # the current session's services, None when not connected
    settings: Callable[[], Settings]
    track_job: Callable[[Worker, str], None]  # show a running job's progress in the status bar
    selected_devices: Callable[[], list[str]]  # the fleet view's selection
    open_deploy_wizard: Callable[..., object]  # (device_ids, source=ref): the wizard on those devices
    deployments_changed: Callable[[], None]  # the deployment history changed: the latency page reloads
    show_status: Callable[[str], None]  # a transient line in the status bar ("rollback sim-001 over MQTT…")
