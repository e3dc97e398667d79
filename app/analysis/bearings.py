"""Rolling-element bearing geometry, its defect frequencies, and a small catalogue.

The defect frequencies are the textbook kinematic ones (e.g. Randall, "Vibration-based Condition
Monitoring", 2011, ch. 5), with fr the shaft frequency, n balls of diameter d on pitch diameter D
and contact angle a:
BPFO = (n/2) fr (1 - (d/D) cos a), BPFI = (n/2) fr (1 + (d/D) cos a),
BSF = (D/2d) fr (1 - ((d/D) cos a)^2), FTF = (fr/2)(1 - (d/D) cos a).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from app.domain.errors import DataError


@dataclass(frozen=True)
class Bearing:
    """Geometry of one rolling-element bearing; `name` is the catalogue designation when known."""

    n_balls: int
    ball_diameter_mm: float
    pitch_diameter_mm: float
    contact_angle_deg: float = 0.0
    name: str = ""

    def __post_init__(self) -> None:
        if self.n_balls < 3:
            raise DataError(f"a bearing has at least 3 rolling elements, not {self.n_balls}")
        if not (0 < self.ball_diameter_mm < self.pitch_diameter_mm):
            raise DataError(f"ball diameter d={self.ball_diameter_mm} mm must be positive and smaller than "
                            f"the pitch diameter D={self.pitch_diameter_mm} mm")
        if not (0 <= self.contact_angle_deg < 90):
            raise DataError(f"contact angle {self.contact_angle_deg} deg must be in [0, 90)")

    def _ratio(self) -> float:
        return self.ball_diameter_mm / self.pitch_diameter_mm * math.cos(math.radians(self.contact_angle_deg))

    def orders(self) -> dict[str, float]:
        """Defect frequencies in multiples of the shaft frequency: BPFO, BPFI, BSF, FTF."""
        r = self._ratio()
        return {
            "BPFO": self.n_balls / 2.0 * (1.0 - r),
            "BPFI": self.n_balls / 2.0 * (1.0 + r),
            "BSF": self.pitch_diameter_mm / (2.0 * self.ball_diameter_mm) * (1.0 - r * r),
            "FTF": 0.5 * (1.0 - r),
        }

    def frequencies(self, shaft_hz: float) -> dict[str, float]:
        """Defect frequencies in Hz at shaft frequency `shaft_hz`."""
        return {k: v * shaft_hz for k, v in self.orders().items()}

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        geo = (f"n={self.n_balls}, d={self.ball_diameter_mm:g} mm, D={self.pitch_diameter_mm:g} mm, "
               f"angle={self.contact_angle_deg:g} deg")
        return f"{self.name} ({geo})" if self.name else geo


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
