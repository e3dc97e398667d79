import pytest

from app.domain.errors import LinkError
from app.transport.urls import BrokerUrl, parse_broker_url


def test_parse_full_url_with_credentials() -> None:
    url = parse_broker_url("mqtt://op%40plant:s3cret@broker.local:1884")
    assert url == BrokerUrl("broker.local", 1884, "op@plant", "s3cret", False)
    assert "s3cret" not in str(url)


def test_defaults_and_tls() -> None:
    assert parse_broker_url("localhost").port == 1883
    assert parse_broker_url("mqtts://h").port == 8883
    assert parse_broker_url("mqtts://h").tls


@pytest.mark.parametrize("bad", ["", "http://h:1", "mqtt://:1883", "mqtt://h:99999", "mqtt://h:0", "mqtt://h:1/x"])
def test_bad_urls_raise_link_error(bad: str) -> None:
    with pytest.raises(LinkError, match="broker URL"):
        parse_broker_url(bad)
