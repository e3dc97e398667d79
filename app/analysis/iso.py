"""ISO vibration-severity zones for overall velocity RMS (mm/s, 10-1000 Hz).

Zone A: newly commissioned; B: unrestricted long-term operation; C: restricted, plan maintenance;
D: severe enough to cause damage. Boundaries (A/B, B/C, C/D) as commonly quoted from ISO 10816-1:1995
Annex B (class I, small machines up to 15 kW) and ISO 20816-3:2022 Tables A.1/A.2 (group 1:
300 kW-50 MW, group 2: 15-300 kW; rigid or flexible foundation). Check against the standard's
tables for contractual use.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.domain.errors import DataError

ZONES = ("A", "B", "C", "D")
# Zone colours (green, light green, amber, red), as the usual severity charts draw them.
ZONE_COLOURS = {"A": "#2e9d4f", "B": "#9ccc3d", "C": "#f0a030", "D": "#d23c3c"}
ZONE_MEANING = {"A": "newly commissioned", "B": "unrestricted operation",
                "C": "restricted operation, plan maintenance", "D": "damage likely"}
FOUNDATIONS = ("rigid", "flexible")
# Machine classes: "10816-1/I", or "20816-3/<group>/<foundation>".
CLASS_I = "10816-1/I"
# Zone boundaries A/B, B/C, C/D in mm/s RMS; sources in the module docstring.
ZONE_BOUNDARIES: dict[str, tuple[float, float, float]] = {
    CLASS_I: (0.71, 1.8, 4.5),
    "20816-3/2/rigid": (1.4, 2.8, 4.5),
    "20816-3/2/flexible": (2.3, 4.5, 7.1),
    "20816-3/1/rigid": (2.3, 4.5, 7.1),
    "20816-3/1/flexible": (3.5, 7.1, 11.0),
}


@dataclass(frozen=True)
class Zone:
    zone: str
    velocity_mm_s: float
    machine_class: str
    boundaries: tuple[float, float, float]

    @property
    def colour(self) -> str:
        return ZONE_COLOURS[self.zone]

    @property
    def meaning(self) -> str:
        return ZONE_MEANING[self.zone]


def machine_class(iso_group: int | None, foundation: str | None) -> str:
    """The table key for a machine: ISO 20816-3 group 1/2 with its foundation, or ISO 10816-1 class I
    (small machines) when no group is given."""
    if iso_group is None:
        return CLASS_I
    if iso_group not in (1, 2):
        raise DataError(f"ISO 20816-3 machine group must be 1 (300 kW-50 MW) or 2 (15-300 kW), not {iso_group}")
    if foundation not in FOUNDATIONS:
        raise DataError(f"ISO group {iso_group} needs a foundation: rigid or flexible (got {foundation!r})")
    return f"20816-3/{iso_group}/{foundation}"


def classify(velocity_mm_s: float, klass: str = CLASS_I) -> Zone:
    """The zone of an overall velocity RMS for machine class `klass` (a key of ZONE_BOUNDARIES)."""
    if klass not in ZONE_BOUNDARIES:
        raise DataError(f"unknown machine class {klass!r}: one of {', '.join(ZONE_BOUNDARIES)}")
    bounds = ZONE_BOUNDARIES[klass]
    index = sum(velocity_mm_s >= b for b in bounds)
    return Zone(ZONES[index], float(velocity_mm_s), klass, bounds)
