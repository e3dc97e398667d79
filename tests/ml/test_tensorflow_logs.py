"""TensorFlow's native log lines (oneDNN banner, absl preamble, the quantizer's
"fully_quantize: ..." line) went straight to the terminal over every `model train` progress bar.
They belong in the debug log; anything else written to stderr meanwhile must still appear."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Importing TensorFlow and converting one tiny model: a few seconds, bounded for a slow CI box.
SUBPROCESS_TIMEOUT_S = 240

SCRIPT = """
import numpy as np
from app.ml import conversion, training
model = training.build_autoencoder(36, (8,), 4)
conversion.to_int8(model, np.random.default_rng(0).standard_normal((20, 36)).astype(np.float32))
print("converted")
"""


def test_training_and_conversion_keep_the_terminal_clean():
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "converted"
    for noise in ("oneDNN", "absl::InitializeLog", "fully_quantize"):
        assert noise not in proc.stderr, proc.stderr


def test_other_stderr_output_during_capture_is_kept(capfd):
    from app.ml.tfimport import native_stderr_to_log

    with native_stderr_to_log():
        os.write(2, b"I0000 00:00:1795531169.899276   17757 port.cc:153] oneDNN custom operations are on.\n")
        os.write(2, b"fully_quantize: 0, inference_type: 6\n")
        print("error: the broker went away", file=sys.stderr, flush=True)
    err = capfd.readouterr().err
    assert err == "error: the broker went away\n"


def test_capture_and_tflm_quieting_never_leave_stderr_redirected(monkeypatch):
    """A GUI converts a model (stderr captured) while a virtual device loads one (TFLM silences
    fds 1 and 2): interleaved dup2 calls would leave fd 2 pointing at /dev/null or a deleted
    temp file for the rest of the session."""
    import threading

    from app.ml import tflm
    from app.ml.tfimport import native_stderr_to_log

    def identity() -> tuple[int, int]:
        st = os.fstat(2)
        return st.st_dev, st.st_ino

    before = identity()
    device_loading, release_device, device_done, converter_inside, converter_at_lock = (
        threading.Event() for _ in range(5))
    shared = tflm.native_output_lock()

    class AnnouncedLock:
        """The shared lock, saying when the capture reaches it (so the test knows it is waiting there)."""

        def __enter__(self):
            converter_at_lock.set()
            return shared.__enter__()

        def __exit__(self, *exc):
            return shared.__exit__(*exc)

    monkeypatch.setattr(tflm, "native_output_lock", AnnouncedLock)

    def device() -> None:
        with tflm._quiet_native_output():
            device_loading.set()
            release_device.wait(SUBPROCESS_TIMEOUT_S)
        device_done.set()

    def converter() -> None:
        with native_stderr_to_log():
            converter_inside.set()
            device_done.wait(SUBPROCESS_TIMEOUT_S)  # the device finishes while we capture, if it can

    t_dev = threading.Thread(target=device)
    t_dev.start()
    assert device_loading.wait(SUBPROCESS_TIMEOUT_S)
    t_conv = threading.Thread(target=converter)
    t_conv.start()
    # the capture reaches the lock the device holds, and cannot get past it (no timed guess)
    assert converter_at_lock.wait(SUBPROCESS_TIMEOUT_S), "the capture does not take the shared lock"
    assert not converter_inside.is_set()
    release_device.set()
    t_dev.join(SUBPROCESS_TIMEOUT_S)
    t_conv.join(SUBPROCESS_TIMEOUT_S)
    assert converter_inside.is_set()
    assert identity() == before
