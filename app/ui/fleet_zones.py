"""The fleet table's velocity column (Qt-free): each device's overall velocity estimated from its
last telemetry features (app.analysis.telemetry) and its ISO zone for the class of the machine it
is mounted on (app.analysis.machines), computed once per telemetry message."""

from __future__ import annotations

import logging
import sqlite3
import time

from app.analysis import iso
from app.analysis.telemetry import velocity_from_features

log = logging.getLogger(__name__)

# Machine descriptions are re-read this often, so a `tinymlops machine set` in a terminal reaches an
# open window's table without a restart (one small query).
CLASSES_RELOAD_S = 10.0


class ZoneCache:
    def __init__(self) -> None:
        self._classes: dict[str, str] | None = None  # loaded from the store on first use
        self._loaded_at = 0.0
        self._fixed = False
        self._zones: dict[str, tuple[tuple, iso.Zone | None]] = {}

    def set_classes(self, classes: dict[str, str] | None) -> None:
        """device id -> ISO class, kept as given; None reloads the described machines now and
        then every CLASSES_RELOAD_S."""
        self._classes, self._fixed = classes, classes is not None
        self._zones.clear()

    def zone(self, rec) -> iso.Zone | None:
        """The zone of `rec`'s (a DeviceRecord) estimated velocity, None before any telemetry."""
        if not self._fixed and (self._classes is None or time.monotonic() - self._loaded_at > CLASSES_RELOAD_S):
            classes = self._load()
            self._loaded_at = time.monotonic()
            if classes != self._classes:
                self._classes = classes
                self._zones.clear()
        cached = self._zones.get(rec.device_id)
        if cached is not None and cached[0] is rec.features:
            return cached[1]
        assert self._classes is not None
        velocity = velocity_from_features(rec.features, rec.shaft_hz) if rec.features else None
        zone = None if velocity is None else iso.classify(velocity, self._classes.get(rec.device_id, iso.CLASS_I))
        self._zones[rec.device_id] = (rec.features, zone)
        return zone

    @staticmethod
    def _load() -> dict[str, str]:
        from app.analysis.machines import machine_classes

        try:
            return machine_classes()
        except (sqlite3.Error, OSError) as exc:  # velocities still show, zoned as small machines
            log.warning("machine descriptions unavailable (%s): zones use ISO 10816-1 class I", exc)
            return {}
