"""Which broker a command means when it names none: the running application's embedded one.

The GUI and `tinymlops sim` start an embedded broker on a port the OS picks, so nothing outside
the process could know where it is. They announce it in `<data dir>/embedded-broker.json`; a
command run without `--broker` (`fleet list`, `deploy`, `data record`, `rollback`, ...) then talks
to the fleet the operator is looking at. A file whose process is gone is ignored, and without one
the command falls back to $TINYMLOPS_BROKER or a broker on this machine's standard MQTT port.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable

from app.domain.paths import data_dir

log = logging.getLogger(__name__)

# Where an operator's broker usually is when none is named and no app is running (Mosquitto's default).
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
# A CI job or a plant laptop names its broker once instead of on every command.
BROKER_ENV = "TINYMLOPS_BROKER"
ANNOUNCE_FILE = "embedded-broker.json"
BROKER_HELP = (f"mqtt://[user:pass@]host:port (default: ${BROKER_ENV}, else the running app's embedded broker, "
               f"else {DEFAULT_BROKER})")
NO_BROKER_HINT = (f"pass --broker mqtt://host:port, set {BROKER_ENV}, or start the app (the command line finds "
                  "its embedded broker by itself)")


def _path():
    return data_dir() / ANNOUNCE_FILE


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive, but not ours to use
        return False
    return True


def announce(url: str) -> Callable[[], None]:
    """Tell later commands where this process's embedded broker is; returns what withdraws it."""
    path = _path()
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({"url": url, "pid": os.getpid()}))
        os.replace(tmp, path)  # atomic: a reader never sees half a file
    except OSError as exc:
        log.warning("could not announce the embedded broker in %s: %s", path, exc)
        return lambda: None

    def withdraw() -> None:
        if running_embedded_broker() == url:  # a newer instance may have announced itself since
            try:
                path.unlink()
            except OSError as exc:
                log.debug("could not remove %s: %s", path, exc)

    return withdraw


def running_embedded_broker() -> str | None:
    """The URL a running application announced, or None."""
    try:
        info = json.loads(_path().read_text())
        url, pid = str(info["url"]), int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return url if _alive(pid) else None


def resolve_broker(url: str | None) -> str:
    """`url` when given; else $TINYMLOPS_BROKER; else the running application's embedded broker;
    else DEFAULT_BROKER."""
    return url or os.environ.get(BROKER_ENV) or running_embedded_broker() or DEFAULT_BROKER
