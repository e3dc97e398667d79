"""Rolling-element bearing geometry and its defect frequencies: one definition for the vibration
simulator (app.fleet), the analysis and the machine descriptions (app.analysis).

The defect frequencies are the textbook kinematic ones (e.g. Randall, "Vibration-based Condition
Monitoring", 2011, ch. 5), with fr the shaft frequency, n balls of diameter d on pitch diameter D
and contact angle a:
BPFO = (n/2) fr (1 - (d/D) cos a), BPFI = (n/2) fr (1 + (d/D) cos a),
BSF = (D/2d) fr (1 - ((d/D) cos a)^2), FTF = (fr/2)(1 - (d/D) cos a).
"""

from __future__ import annotations

import math
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
