"""Tiny-MLOps operator: the operator's end of the Tiny-MLOps loop."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tinymlops-operator")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.1.0"
