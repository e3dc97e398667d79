"""Analyse stored recordings with the description of the machine they came from: one place where a
dataset, a machine description and command-line overrides become the analysis inputs (used by
`tinymlops data analyze` and `tinymlops report`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.analysis import iso
from app.analysis.bearings import Bearing
from app.analysis.diagnosis import Analysis, analyze
from app.analysis.machines import Machine


@dataclass(frozen=True)
class Overrides:
    """What the caller states for this analysis, winning over the stored machine description."""

    shaft_hz: float | None = None
    bearing: Bearing | None = None
    iso_group: int | None = None
    foundation: str | None = None


def inputs(machine: Machine | None, overrides: Overrides, recorded_shaft_hz: float | None = None
           ) -> tuple[float | None, Bearing | None, str]:
    """(nominal shaft Hz, bearing, ISO machine class): the overrides, else the machine description,
    else the speed the device reported while recording; class I when no group is known."""
    shaft = overrides.shaft_hz or (machine.shaft_hz if machine else None) or recorded_shaft_hz
    bearing = overrides.bearing or (machine.bearing if machine else None)
    if overrides.iso_group is not None:
        klass = iso.machine_class(overrides.iso_group, overrides.foundation)
    elif machine is not None:
        klass = machine.machine_class
    else:
        klass = iso.CLASS_I
    return shaft, bearing, klass


def analyze_recording(samples: np.ndarray, sample_rate: float, machine: Machine | None,
                      overrides: Overrides = Overrides(), recorded_shaft_hz: float | None = None) -> Analysis:
    shaft, bearing, klass = inputs(machine, overrides, recorded_shaft_hz)
    return analyze(samples, sample_rate, shaft, bearing, klass)
