"""Generate the feature golden vectors `tests/vectors/features_*.json` (PROTOCOL.md section 8).

    python -m tests.vectors.generate_features

Each file holds one raw window in and the 36 features `app.ml.features.extract` gives for it:
`samples` is 1024 rows of [x, y, z] in g; every value is exactly a float32 (written in its
shortest round-trip form, read it with strtof); `samples_sha256` is the SHA-256 of the samples as
little-endian float32 bytes, row-major (x0 y0 z0 x1 ...), so a reader can prove it parsed them
bit-exactly. `features` are in the spec's order (`feature_names`). An implementation matches
when every feature is within `tolerance.rel` relative or `tolerance.abs` absolute.
Regenerate only when section 8 changes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from app.fleet.vibration import MachineSimulator
from app.ml import features
from app.protocol.codes import FaultMask

HERE = Path(__file__).resolve().parent
SPEC = features.DEFAULT_SPEC
TOLERANCE = {"rel": 1e-4, "abs": 1e-5}
SEED = 8


def _sim(mask: int = 0, severity: float = 0.0, shaft_hz: float = 24.7) -> np.ndarray:
    sim = MachineSimulator(SEED, sample_rate=SPEC.sample_rate, shaft_hz=shaft_hz)
    sim.set_fault(mask, severity)
    sim.generate(SPEC.window)  # past the first window, so bearing ringing is established
    return sim.generate(SPEC.window)


def _sine() -> np.ndarray:
    t = np.arange(SPEC.window) / SPEC.sample_rate
    rng = np.random.default_rng(SEED)
    x = np.stack([0.5 * np.sin(2 * np.pi * 50.0 * t), 0.3 * np.sin(2 * np.pi * 160.0 * t + 1.0),
                  0.2 * np.sin(2 * np.pi * 1000.0 * t + 2.0)], axis=1)
    return x + 0.001 * rng.standard_normal(x.shape)


CASES = {
    "healthy": ("simulated healthy machine, 24.7 Hz shaft", lambda: _sim()),
    "imbalance": ("simulated imbalance, severity 0.5", lambda: _sim(FaultMask.IMBALANCE, 0.5)),
    "bearing_outer": ("simulated bearing outer-race defect, severity 0.5",
                      lambda: _sim(FaultMask.BEARING_OUTER, 0.5)),
    "misalignment": ("simulated misalignment, severity 0.5", lambda: _sim(FaultMask.MISALIGNMENT, 0.5)),
    "sine": ("pure sines x 50 Hz 0.5 g, y 160 Hz 0.3 g, z 1000 Hz 0.2 g, plus 1 mg white noise so every "
             "band holds energy far above f32 FFT rounding", _sine),
    "silence": ("all zeros: rms, peak, crest, kurtosis 0, every band log10(1e-12) = -12",
                lambda: np.zeros((SPEC.window, 3))),
}


def f32_list(values: np.ndarray) -> list:
    """float32 values as the shortest decimals that round-trip (as Python floats for json)."""
    return [float(np.format_float_positional(np.float32(v), unique=True, trim="-")) for v in values]


def vector(name: str, description: str, window: np.ndarray) -> dict:
    window = np.asarray(window, np.float32)
    rows = [f32_list(row) for row in window]
    parsed = np.asarray(rows, np.float64).astype(np.float32)
    assert np.array_equal(parsed, window), "float32 samples did not round-trip through decimal"
    return {
        "spec": SPEC.spec_id,
        "name": name,
        "description": description,
        "sample_rate": SPEC.sample_rate,
        "window": SPEC.window,
        "axes": list(SPEC.axes),
        "band_edges": list(SPEC.band_edges),
        "tolerance": TOLERANCE,
        "feature_names": SPEC.names(),
        "features": [float(v) for v in features.extract(window)],
        "samples_sha256": hashlib.sha256(window.astype("<f4").tobytes()).hexdigest(),
        "samples": rows,
    }


def main() -> None:
    for name, (description, make) in CASES.items():
        data = vector(name, description, make())
        path = HERE / f"features_{name}.json"
        path.write_text(json.dumps(data, separators=(",", ":")) + "\n")
        print(f"wrote {path.relative_to(HERE.parent.parent)}")


if __name__ == "__main__":
    main()
