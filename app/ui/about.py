"""About box: what this build is made of (the versions a support request needs)."""

from __future__ import annotations

import platform
import sys


def versions() -> dict[str, str]:
    import numpy
    import pyqtgraph
    import PySide6
    from PySide6 import QtCore

    from app import __version__

    return {"Tiny-MLOps operator": __version__, "Qt": QtCore.qVersion(), "PySide6": PySide6.__version__,
            "pyqtgraph": pyqtgraph.__version__, "numpy": numpy.__version__,
            "Python": f"{platform.python_version()} ({sys.platform})"}


def about_html() -> str:
    rows = "".join(f"<tr><td>{k}</td><td><b>{v}</b></td></tr>" for k, v in versions().items())
    return ("<h3>Tiny-MLOps operator</h3>"
            "<p>Record vibration, train anomaly detectors, convert them for microcontrollers, deploy over "
            "USB serial or MQTT, and measure deployment, loading and inference latency.</p>"
            f"<table cellspacing='4'>{rows}</table>")
