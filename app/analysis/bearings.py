"""A small catalogue of common bearings and the bearing arguments the CLI and GUI take; the
geometry and its defect frequencies are app.domain.bearings' Bearing (re-exported here)."""

from __future__ import annotations

import re

from app.domain.bearings import Bearing as Bearing  # re-exported: the analysis' callers import it here
from app.domain.errors import DataError

# Common deep-groove ball bearings (contact angle 0). 6203 and 6205 are the SKF bearings of the Case
# Western Reserve University bearing data set (its published ball and pitch diameters); the others
# are nominal geometries of the series (ball count and size of typical makes, pitch diameter the
# mean of bore and outside diameter): close enough for markers, but check the maker's data sheet.
CATALOGUE: dict[str, Bearing] = {
    "6203": Bearing(8, 6.75, 28.50, 0.0, "6203"),
    "6204": Bearing(8, 7.94, 33.50, 0.0, "6204"),
    "6205": Bearing(9, 7.94, 39.04, 0.0, "6205"),
    "6206": Bearing(9, 9.53, 46.00, 0.0, "6206"),
    "6305": Bearing(8, 10.32, 43.50, 0.0, "6305"),
    "6306": Bearing(8, 12.00, 51.00, 0.0, "6306"),
}

_KEYS = {"n": "n_balls", "d": "ball_diameter_mm", "D": "pitch_diameter_mm", "angle": "contact_angle_deg"}


def parse_bearing(text: str) -> Bearing:
    """A catalogue designation ("6205", "SKF 6205-2RS") or a geometry "n=9,d=7.94,D=39.04,angle=0"."""
    text = text.strip()
    if "=" not in text:
        match = re.search(r"\b(\d{4})\b", text.replace("-", " "))
        if match and match.group(1) in CATALOGUE:
            return CATALOGUE[match.group(1)]
        raise DataError(f"unknown bearing {text!r}: catalogue has {', '.join(CATALOGUE)}; or give the geometry "
                        "as n=BALLS,d=BALL_MM,D=PITCH_MM,angle=DEG")
    values: dict[str, float] = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        key = key.strip()
        if key not in _KEYS:
            raise DataError(f"bearing geometry {text!r}: unknown key {key!r} (use n, d, D, angle)")
        try:
            values[_KEYS[key]] = float(value)
        except ValueError:
            raise DataError(f"bearing geometry {text!r}: {key}={value.strip()!r} is not a number") from None
    missing = [k for k, v in _KEYS.items() if v not in values and k != "angle"]
    if missing:
        raise DataError(f"bearing geometry {text!r} lacks {', '.join(missing)} (need n, d, D; angle defaults to 0)")
    n = values["n_balls"]
    if n != int(n):
        raise DataError(f"bearing geometry {text!r}: n must be a whole number of balls")
    return Bearing(int(n), values["ball_diameter_mm"], values["pitch_diameter_mm"],
                   values.get("contact_angle_deg", 0.0))


def bearing_from_dict(data: dict | None) -> Bearing | None:
    return Bearing(**data) if data else None
