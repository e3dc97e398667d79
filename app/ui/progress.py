"""What a worker job reports while it runs, as typed objects (Qt-free: jobs may run in a child
process, so these are plain picklable dataclasses).

A job calls `progress(percent, text)` for an ordinary step or `progress(DeviceProgress(...))` for
one device's share of a deployment; the Worker emits either as one object on its `progress`
signal, so no receiver parses text to learn which device moved.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JobProgress:
    """A step of a job: how far (0..100) and what it is doing."""

    percent: int
    text: str = ""


@dataclass(frozen=True)
class DeviceProgress:
    """One device's transfer: `done` of `total` bytes (a deployment to many devices sends many)."""

    device: str
    done: int
    total: int

    @property
    def percent(self) -> int:
        return int(100 * self.done / self.total) if self.total else 0

    @property
    def text(self) -> str:
        return f"{self.device}: {self.percent}%"


Progress = JobProgress | DeviceProgress
