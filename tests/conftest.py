"""Shared pytest setup. Fixtures live in tests/fixtures/ by area and are registered here.

Tests marked `hardware` need a real device on a serial port and run only when asked
(esptool's test/conftest.py style): `pytest --hardware --port /dev/ttyUSB0 [--board stm32f446]
[--baud 921600] -m hardware`. Without `--hardware` they are skipped, with the reason.
"""

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

pytest_plugins = [
    name
    for name in ("tests.fixtures.brokers", "tests.fixtures.rabbitmq", "tests.fixtures.fleet", "tests.fixtures.models",
                 "tests.fixtures.c_device", "tests.fixtures.qemu", "tests.fixtures.qt_gc")
    if os.path.exists(os.path.join(os.path.dirname(__file__), "fixtures", name.rsplit(".", 1)[1] + ".py"))
]

# Tests never write signing keys into a developer's OS keyring: keys go to each test's data dir.
os.environ.setdefault("TINYMLOPS_KEYRING", "off")


@pytest.fixture(autouse=True)
def own_data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test (and every command it starts) gets its own data dir, never the user's: the xdist
    workers would otherwise share one registry, fleet memory, broker announcement and clean-up list
    in ~/.local/share/tinymlops (a clean-up remembered for 127.0.0.1:PORT could meet another test's
    broker on that port). A test that sets its own dir with monkeypatch overrides this one."""
    from app.domain.paths import DATA_DIR_ENV

    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path_factory.mktemp("data-dir")))

def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hardware", "tests against a real device (marker: hardware)")
    group.addoption("--hardware", action="store_true", default=False,
                    help="run the tests marked `hardware` (needs --port)")
    group.addoption("--port", default=os.environ.get("TINYMLOPS_TEST_PORT"),
                    help="serial port of the attached device, e.g. /dev/serial/by-id/... "
                    "(default $TINYMLOPS_TEST_PORT)")
    group.addoption("--board", default=None,
                    help="hardware profile the device must report (e.g. stm32f446); any when not given")
    group.addoption("--baud", type=int, default=None, help="the device's baud rate (default: the protocol's)")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--hardware") and not config.getoption("--port"):
        raise pytest.UsageError("--hardware needs --port PORT (or $TINYMLOPS_TEST_PORT): the device's serial port")
    board = config.getoption("--board")
    if board is not None:
        from app.domain.profiles import PROFILES

        if board not in PROFILES:
            raise pytest.UsageError(f"--board {board!r} is not a hardware profile; known: {', '.join(PROFILES)}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--hardware"):
        return
    skip = pytest.mark.skip(reason="needs a real device: run with --hardware --port PORT")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def hardware_port(request: pytest.FixtureRequest) -> str:
    """The serial port given with --port (only hardware tests use it; they run with --hardware)."""
    return request.config.getoption("--port")


@pytest.fixture(scope="session")
def hardware_board(request: pytest.FixtureRequest) -> str | None:
    """The hardware profile given with --board, or None for any."""
    return request.config.getoption("--board")


@pytest.fixture(scope="session")
def hardware_baud(request: pytest.FixtureRequest) -> int:
    from app.protocol.framing import DEFAULT_BAUD

    return request.config.getoption("--baud") or DEFAULT_BAUD
