"""About box: what this build is made of (the versions a support request needs).

Library versions come from the installed distributions' metadata (importlib.metadata), so the box
never imports TensorFlow (seconds of start-up and hundreds of MB) just to print its version."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

# Shown name -> distribution names to look for, first found wins (TensorFlow is installed as
# tensorflow-cpu here, as tensorflow elsewhere).
DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "pyqtgraph": ("pyqtgraph",),
    "TensorFlow": ("tensorflow-cpu", "tensorflow", "tensorflow-intel", "tensorflow-macos"),
    "tflite-micro": ("tflite-micro",),
    "paho-mqtt": ("paho-mqtt",),
    "amqtt": ("amqtt",),
    "numpy": ("numpy",),
    "pyserial": ("pyserial",),
}
NOT_INSTALLED = "not installed"


def distribution_version(names: tuple[str, ...]) -> str:
    """The version of the first of `names` that is installed (NOT_INSTALLED when none is)."""
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return NOT_INSTALLED


def versions() -> dict[str, str]:
    import PySide6
    from PySide6 import QtCore

    from app import __version__

    out = {"Tiny-MLOps operator": __version__, "Qt": QtCore.qVersion(), "PySide6": PySide6.__version__}
    out.update({shown: distribution_version(names) for shown, names in DISTRIBUTIONS.items()})
    out["Python"] = f"{platform.python_version()} ({sys.platform})"
    return out


def about_html() -> str:
    rows = "".join(f"<tr><td>{k}</td><td><b>{v}</b></td></tr>" for k, v in versions().items())
    return ("<h3>Tiny-MLOps operator</h3>"
            "<p>Record vibration, train anomaly detectors, convert them for microcontrollers, deploy over "
            "USB serial or MQTT, and measure deployment, loading and inference latency.</p>"
            f"<table cellspacing='4'>{rows}</table>")
