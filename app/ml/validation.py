"""Does a model fit a device? Ops, the smallest tensor arena the real TFLM loads it in, and a
fit verdict per hardware profile (image size vs slot, arena vs RAM budget, ops vs op set), each
"does not fit" with its reason."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

from app.domain.errors import ModelError
from app.domain.profiles import PROFILES, HardwareProfile, get_profile
from app.ml import tflm
from app.protocol.codes import ErrorCode

log = logging.getLogger(__name__)


@dataclass
class ProfileFit:
    profile: str
    fits: bool
    image_size: int
    slot_size: int
    arena: int
    arena_budget: int
    unsupported_ops: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _kb(n: int) -> str:
    return f"{n / 1024:.1f} KB"


def fit_profile(profile: HardwareProfile, image_size: int, arena: int, ops: list[str]) -> ProfileFit:
    reasons = []
    if image_size > profile.slot_size:
        reasons.append(f"image {_kb(image_size)} exceeds the {_kb(profile.slot_size)} model slot")
    if arena > profile.arena_budget:
        reasons.append(f"tensor arena {_kb(arena)} exceeds the {_kb(profile.arena_budget)} RAM budget")
    unsupported = [op for op in ops if op not in profile.ops]
    if unsupported:
        reasons.append(f"ops not supported on this device: {', '.join(unsupported)}")
    return ProfileFit(profile.key, not reasons, image_size, profile.slot_size, arena,
                      profile.arena_budget, unsupported, reasons)


@dataclass
class Validation:
    ops: list[str]
    arena: int
    image_size: int
    fit: dict[str, ProfileFit]

    def fit_dict(self) -> dict[str, dict]:
        return {k: v.to_dict() for k, v in self.fit.items()}


def check_ops(ops: list[str]) -> None:
    """A model no profile's op set covers is a ModelError (UNSUPPORTED_OP) naming the ops."""
    known = set().union(*(p.ops for p in PROFILES.values()))
    foreign = [op for op in ops if op not in known]
    if foreign:
        raise ModelError(f"the model uses ops no supported device runs: {', '.join(foreign)}",
                         code=ErrorCode.UNSUPPORTED_OP)


def fit_all(image_size: int, arena: int, ops: list[str]) -> dict[str, ProfileFit]:
    return {key: fit_profile(p, image_size, arena, ops) for key, p in PROFILES.items()}


def validate(tflite: bytes, image_size: int) -> Validation:
    """Ops and minimum arena from the real TFLM, and the fit table for every profile."""
    ops = tflm.model_ops(tflite)
    check_ops(ops)
    arena = tflm.min_arena_size(tflite)
    fit = fit_all(image_size, arena, ops)
    log.info("ops %s, arena %d bytes, fits %s", ops, arena, [k for k, f in fit.items() if f.fits])
    return Validation(ops=ops, arena=arena, image_size=image_size, fit=fit)


def fit_from_record(profile_key: str, image_size: int, arena: int, ops: list[str]) -> ProfileFit:
    """Fit against one profile from stored figures (no interpreter needed)."""
    return fit_profile(get_profile(profile_key), image_size, arena, ops)


def require_fit(profile_key: str, image_size: int, arena: int, ops: list[str], label: str = "model") -> None:
    """Refuse (ModelError with the device error code) a model that does not fit the profile."""
    result = fit_from_record(profile_key, image_size, arena, ops)
    if result.fits:
        return
    if result.unsupported_ops:
        code = ErrorCode.UNSUPPORTED_OP
    elif image_size > result.slot_size:
        code = ErrorCode.TOO_LARGE
    else:
        code = ErrorCode.ARENA_TOO_SMALL
    raise ModelError(f"{label} does not fit {profile_key}: {'; '.join(result.reasons)}", code=code)


def format_table(fit: dict[str, dict]) -> str:
    """The fit table as text, one profile per row."""
    header = f"{'profile':<17} {'fits':<4} {'image/slot':>19} {'arena/budget':>19}  reason"
    rows = [header, "-" * len(header)]
    for key, f in fit.items():
        rows.append(f"{key:<17} {'yes' if f['fits'] else 'NO':<4} "
                    f"{_kb(f['image_size']) + ' / ' + _kb(f['slot_size']):>19} "
                    f"{_kb(f['arena']) + ' / ' + _kb(f['arena_budget']):>19}  "
                    f"{'; '.join(f['reasons']) if f['reasons'] else '-'}")
    return "\n".join(rows)
