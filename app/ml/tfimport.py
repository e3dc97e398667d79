"""The one place TensorFlow is imported, lazily: `import tensorflow` costs seconds and floods the
terminal with C++ log lines, neither of which belongs in application start-up.

TensorFlow 2.21's native code writes to file descriptor 2 before absl logging is initialised, so
`TF_CPP_MIN_LOG_LEVEL` does not silence it (the oneDNN banner, the int8 quantizer's
"fully_quantize: ..." line). `native_stderr_to_log` captures fd 2 around those calls: the known
chatter goes to the debug log, every other byte is written back to stderr afterwards."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)
_lock = threading.Lock()

# Native lines that are chatter, not news: absl's info/warning lines ("I0000 00:00:... file.cc:N]"),
# its "before InitializeLog" preamble, and the MLIR quantizer's settings dump.
_NOISE = re.compile(rb"^(?:[IW]\d{4} \d+:\d+:\d+\.\d+ +\d+ [^\]]+\]|WARNING: All log messages before "
                    rb"absl::InitializeLog\(\)|fully_quantize: )")
_capturing = threading.local()


@contextlib.contextmanager
def native_stderr_to_log() -> Iterator[None]:
    """Capture fd 2 (native and Python writes alike) for the duration; re-emit all but _NOISE."""
    if getattr(_capturing, "active", False):
        yield
        return
    from app.ml.tflm import native_output_lock  # TFLM loads silence fd 2 too: never interleave

    with native_output_lock(), tempfile.TemporaryFile() as sink:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        _capturing.active = True
        try:
            yield
        finally:
            _capturing.active = False
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            kept = []
            for line in sink.read().splitlines(keepends=True):
                if _NOISE.match(line):
                    log.debug("native: %s", line.decode(errors="replace").rstrip())
                else:
                    kept.append(line)
            if kept:
                os.write(2, b"".join(kept))


def tensorflow():
    """The `tensorflow` module, imported on first use with its C++ logging turned down."""
    with _lock:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        if "tensorflow" in sys.modules:
            return sys.modules["tensorflow"]
        with native_stderr_to_log():
            import tensorflow as tf

        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        logging.getLogger("absl").setLevel(logging.ERROR)
        return tf


def saved_model_proto():
    """TensorFlow's SavedModel protobuf class, to read a `saved_model.pb` as data (nothing run)."""
    tensorflow()
    from tensorflow.core.protobuf import saved_model_pb2

    return saved_model_pb2.SavedModel


def keras():
    """The Keras 3 module that ships with TensorFlow."""
    tensorflow()
    with native_stderr_to_log():
        import keras as k

    return k
