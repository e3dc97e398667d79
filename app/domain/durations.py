"""Durations as people write them on a command line: `300`, `90s`, `5m`, `1h` (and `1.5h`).

Why: an observation window of a staged rollout or an adapt is minutes to hours; `--observe 5m`
reads as what it means where `--observe 300` has to be worked out. One parser for every option
that takes a duration (deploy --stages, rollouts --resume, adapt) so they accept the same forms.
"""

from __future__ import annotations

import math
import re

# Seconds per unit suffix; no suffix is seconds.
UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}
_FORM = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*$", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """Seconds from `300`, `90s`, `5m` or `1h` (a decimal number allowed); ValueError with the forms
    accepted for anything else (a sign, an unknown unit, an empty string). Zero parses: whether a
    zero duration makes sense is the caller's rule, said in its own words."""
    match = _FORM.match(str(text))
    seconds = float(match.group(1)) * UNIT_SECONDS[match.group(2).lower()] if match else math.nan
    if not math.isfinite(seconds):
        raise ValueError(f"{text!r} is not a duration: write seconds (300, 90s) or minutes and hours (5m, 1h)")
    return seconds
