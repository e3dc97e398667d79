"""The embedded broker's log says what happened at the level it deserves: a client that went away
before its CONNECT is everyday life (INFO/DEBUG), not an ERROR in the operator's log."""

from __future__ import annotations

import logging
import socket

from app.transport.broker import EmbeddedBroker
from tests.transport.helpers import wait_until


def test_a_client_that_goes_away_is_not_an_error(caplog):
    caplog.set_level(logging.DEBUG, logger="amqtt")
    with EmbeddedBroker() as broker:
        for _ in range(3):  # a port check, a client killed before it spoke
            socket.create_connection(("127.0.0.1", broker.port)).close()
        wait_until(lambda: sum("No data from" in r.getMessage() for r in caplog.records) == 3,
                   what="the broker noticing the three clients went away")
        wait_until(lambda: sum("Failed to initialize client session" in r.getMessage() for r in caplog.records) == 3,
                   what="amqtt's second record of each")
    went_away = [r for r in caplog.records if r.name.startswith("amqtt") and "No data" in r.getMessage()]
    assert {r.levelno for r in went_away} <= {logging.INFO, logging.DEBUG}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_garbage_from_a_client_is_still_a_warning(caplog):
    caplog.set_level(logging.DEBUG, logger="amqtt")
    with EmbeddedBroker() as broker, socket.create_connection(("127.0.0.1", broker.port)) as sock:
        sock.sendall(b"\xff\xff\xff\xff\xff")  # not MQTT: someone is talking nonsense to the broker
        wait_until(lambda: any("Invalid connection" in r.getMessage() for r in caplog.records),
                   what="the broker refusing the garbage")
    assert [r.levelno for r in caplog.records if "Invalid connection" in r.getMessage()] == [logging.WARNING]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
