"""Broker URLs (`mqtt://[user:pass@]host:port`, `mqtts://...`) parsed once, with clear errors."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from app.domain.errors import LinkError

DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
SCHEMES = {"mqtt": False, "tcp": False, "mqtts": True, "ssl": True}


@dataclass(frozen=True)
class BrokerUrl:
    host: str
    port: int = DEFAULT_PORT
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @property
    def address(self) -> str:
        """`host:port`, for messages (never shows the password)."""
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def parse_broker_url(url: str | BrokerUrl) -> BrokerUrl:
    """Parse `mqtt://[user:pass@]host[:port]`; a bare `host:port` means mqtt://. Raises LinkError."""
    if isinstance(url, BrokerUrl):
        return url
    text = (url or "").strip()
    if not text:
        raise LinkError("empty broker URL: expected mqtt://host:port")
    if "://" not in text:
        text = f"mqtt://{text}"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise LinkError(f"invalid broker URL {url!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise LinkError(f"invalid broker URL {url!r}: scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise LinkError(f"invalid broker URL {url!r}: no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise LinkError(f"invalid broker URL {url!r}: expected mqtt://host:port with nothing after the port")
    if port == 0:
        raise LinkError(f"invalid broker URL {url!r}: port 0")
    tls = SCHEMES[scheme]
    return BrokerUrl(
        host=parts.hostname,
        port=port if port is not None else (DEFAULT_TLS_PORT if tls else DEFAULT_PORT),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        tls=tls,
    )
