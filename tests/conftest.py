"""Shared pytest setup. Fixtures live in tests/fixtures/ by area and are registered here."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

pytest_plugins = [
    name
    for name in ("tests.fixtures.brokers", "tests.fixtures.fleet", "tests.fixtures.models")
    if os.path.exists(os.path.join(os.path.dirname(__file__), "fixtures", name.rsplit(".", 1)[1] + ".py"))
]

# Tests never write signing keys into a developer's OS keyring: keys go to each test's data dir.
os.environ.setdefault("TINYMLOPS_KEYRING", "off")
