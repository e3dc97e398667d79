"""Calling the listeners of a link, channel or monitor: one that raises must not stop the others
nor the thread that delivers (a reader or network thread), so each failure is logged and counted.

One home for the loop the serial and MQTT links, the channel and the fleet monitor all need."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, MutableMapping


def call_each(callbacks: Iterable[Callable[..., object]], args: tuple, logger: logging.Logger, what: str,
              *what_args: object, errors: MutableMapping[str, int] | None = None,
              error_key: str = "listener_errors") -> None:
    """`callback(*args)` for each of `callbacks`; one that raises is logged on `logger` with the
    message `what % what_args` (formatted only then) and counted in `errors[error_key]`."""
    for callback in callbacks:
        try:
            callback(*args)
        except Exception:
            if errors is not None:
                errors[error_key] += 1
            logger.exception(what, *what_args)
