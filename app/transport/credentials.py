"""Where a broker password comes from: never a command line or a settings file.

In order: a password typed at this run's prompt (kept in memory only), `$TINYMLOPS_BROKER_PASSWORD`,
then the OS keyring entry for `user@host:port` (service
"tinymlops-broker"), else none (the caller may prompt, as the CLI does on a terminal). A password
written into a URL still works, for compatibility, but is logged as a warning: it shows in `ps`,
shell history and logs.
"""

from __future__ import annotations

import logging
import os

from app.domain.keyring_access import os_keyring
from app.transport.urls import BrokerUrl

log = logging.getLogger(__name__)

PASSWORD_ENV = "TINYMLOPS_BROKER_PASSWORD"
KEYRING_SERVICE = "tinymlops-broker"


def keyring_entry(url: BrokerUrl) -> str:
    return f"{url.username}@{url.host}:{url.port}"


# Passwords typed at a prompt this run (the CLI's --username): kept in this process's memory only.
_session: dict[str, str] = {}


def remember_for_session(url: BrokerUrl, password: str) -> None:
    """Use `password` for `url`'s user until this process ends (never written anywhere)."""
    _session[keyring_entry(url)] = password


def password_for(url: BrokerUrl) -> str | None:
    """The password to log in as `url.username`, or None when no source has one."""
    if not url.username:
        return None
    if url.password is not None:
        log.warning("broker password given inside the URL: it shows in process lists and history; "
                    "use $%s or the OS keyring", PASSWORD_ENV)
        return url.password
    if keyring_entry(url) in _session:
        return _session[keyring_entry(url)]
    env = os.environ.get(PASSWORD_ENV)
    if env:
        return env
    kr = os_keyring()
    if kr is not None:
        try:
            return kr.get_password(KEYRING_SERVICE, keyring_entry(url))
        except Exception as exc:  # a locked keyring is "no password here", not a crash
            log.warning("OS keyring did not answer for %s: %s", keyring_entry(url), exc)
    return None


def store_password(url: BrokerUrl, password: str) -> bool:
    """Keep the password in the OS keyring; False when there is none (the caller says so)."""
    kr = os_keyring()
    if kr is None or not url.username:
        return False
    try:
        kr.set_password(KEYRING_SERVICE, keyring_entry(url), password)
        return True
    except Exception as exc:
        log.warning("OS keyring refused the broker password: %s", exc)
        return False
