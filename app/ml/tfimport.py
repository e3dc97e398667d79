"""The one place TensorFlow is imported, lazily: `import tensorflow` costs seconds and floods the
terminal with C++ log lines, neither of which belongs in application start-up."""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)
_lock = threading.Lock()


def tensorflow():
    """The `tensorflow` module, imported on first use with its C++ logging turned down."""
    with _lock:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        logging.getLogger("absl").setLevel(logging.ERROR)
        return tf


def keras():
    """The Keras 3 module that ships with TensorFlow."""
    tensorflow()
    import keras as k

    return k
