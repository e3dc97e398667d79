"""One exception family for the whole application.

Library errors (SerialException, MQTT disconnects, struct errors, TensorFlow failures) are turned
into these at the layer that meets them, so callers handle one kind of failure with a code and a
human message instead of a zoo of third-party exceptions.
"""

from __future__ import annotations


class TinyMLOpsError(Exception):
    """Base of every error this application raises on purpose."""

    code: int = 0

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class ProtocolError(TinyMLOpsError):
    """A message or frame that does not follow firmware/PROTOCOL.md."""


class LinkError(TinyMLOpsError):
    """A transport failed: port vanished, broker refused or dropped us, timeout."""


class DeviceError(TinyMLOpsError):
    """The device answered ERROR; `code` is the protocol error code (PROTOCOL.md section 9)."""


class ModelError(TinyMLOpsError):
    """A model file, image or registry entry is unusable."""


class DataError(TinyMLOpsError):
    """A dataset or recording is unusable (wrong rate, too few windows, bad columns)."""


class Cancelled(TinyMLOpsError):
    """A long operation stopped because its caller asked it to."""
