"""The fleet table's velocity estimate from telemetry features against the exact figure from raw
samples, on simulated machines."""

import numpy as np
import pytest

from app.analysis import spectra as sp
from app.analysis.simulated import record
from app.analysis.telemetry import velocity_from_features
from app.ml.features import extract_batch, windows_from_recording
from app.protocol.codes import FaultMask

# One 0.32 s window and band-wide resolution: measured within ~10 % on the simulator; 15 % allowed.
TOLERANCE = 0.15


@pytest.mark.parametrize("mask", [0, FaultMask.IMBALANCE, FaultMask.MISALIGNMENT, FaultMask.LOOSENESS,
                                  FaultMask.BEARING_OUTER])
@pytest.mark.parametrize("shaft_hz", [18.0, 24.7, 31.0])
def test_velocity_from_features_matches_raw_samples(mask, shaft_hz):
    rec = record(3, mask, 0.5, 4.0, shaft_hz=shaft_hz)
    exact = float(sp.velocity_rms(sp.welch(rec.samples, 3200, sp.segment_length(len(rec.samples), 3200))).max())
    estimates = [velocity_from_features(f, shaft_hz) for f in extract_batch(windows_from_recording(rec.samples))]
    assert float(np.median(estimates)) == pytest.approx(exact, rel=TOLERANCE)


def test_velocity_from_features_refuses_other_vectors():
    assert velocity_from_features((1.0, 2.0), 25.0) is None
    assert velocity_from_features(tuple([float("nan")] * 36), 25.0) is None
