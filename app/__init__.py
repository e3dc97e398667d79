"""Tiny-MLOps operator: the operator's end of the Tiny-MLOps loop."""

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def _version() -> str:
    """pyproject.toml's version: read directly in a source tree (installed metadata there can be a
    stale egg-info), from the installed (or, in a frozen bundle, the copied) metadata otherwise."""
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if pyproject.is_file():
        import tomllib

        with open(pyproject, "rb") as fh:
            project = tomllib.load(fh).get("project", {})
        if project.get("name") == "tinymlops-operator":
            return str(project["version"])
    try:
        return version("tinymlops-operator")
    except PackageNotFoundError:
        return "0+unknown"  # neither a source tree nor an installed distribution


__version__ = _version()
