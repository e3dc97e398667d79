"""The OS keyring (Secret Service, macOS Keychain, Windows Credential Locker) when one answers here.

One switch for every secret the application keeps (signing keys, broker passwords):
`TINYMLOPS_KEYRING=off` keeps the OS keyring out of it (tests, a portable install on a USB stick).
"""

from __future__ import annotations

import logging
import os
from types import ModuleType

log = logging.getLogger(__name__)

KEYRING_ENV = "TINYMLOPS_KEYRING"
_OFF = ("off", "0", "no", "false")


def os_keyring() -> ModuleType | None:
    """The `keyring` module when a real backend answers, else None (headless box, no D-Bus)."""
    if os.environ.get(KEYRING_ENV, "").lower() in _OFF:
        return None
    try:
        import keyring
        from keyring.backends import fail

        backend = keyring.get_keyring()
        if isinstance(backend, fail.Keyring) or getattr(backend, "priority", 1) <= 0:
            return None
        return keyring
    except Exception as exc:  # a broken D-Bus or backend import: behave as if there were none
        log.debug("no usable OS keyring: %s", exc)
        return None
