"""Where the application keeps its data (platformdirs), overridable for tests and portable use."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_data_dir

APP_NAME = "tinymlops"
# Set to put the registry, datasets and history elsewhere (tests, CI, a USB stick).
DATA_DIR_ENV = "TINYMLOPS_DATA_DIR"


def data_dir() -> Path:
    path = Path(os.environ.get(DATA_DIR_ENV) or user_data_dir(APP_NAME, appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_path() -> Path:
    """One SQLite file holds the model registry, datasets and the deployment history."""
    return data_dir() / "tinymlops.sqlite3"


def artifacts_dir() -> Path:
    path = data_dir() / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def resources_dir() -> Path:
    """`resources/` of the source tree, or of a frozen bundle."""
    import sys

    base = Path(getattr(sys, "_MEIPASS", Path(__file__).resolve().parents[2]))
    return base / "resources"
