"""Broker URLs (`mqtt://[user@]host:port`, `mqtts://[user@]host:8883?ca=FILE&cert=FILE&key=FILE`)
parsed once, with clear errors.

TLS files travel in the URL's query so one string carries a whole broker identity through every
layer (CLI, API, history) without the password, which comes from the environment, the OS keyring
or a prompt (app.transport.credentials), never from a command line.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from app.domain.errors import LinkError

DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
SCHEMES = {"mqtt": False, "tcp": False, "mqtts": True, "ssl": True}
# Query keys of an mqtts:// URL: the CA that signed the broker's certificate, our client certificate
# and its private key (PEM files).
TLS_FILES = ("ca", "cert", "key")


@dataclass(frozen=True)
class BrokerUrl:
    host: str
    port: int = DEFAULT_PORT
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    @property
    def address(self) -> str:
        """`host:port`, for messages (never shows the password)."""
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{quote(self.username, safe='')}@" if self.username else ""
        query = "&".join(f"{k}={quote(v)}" for k in TLS_FILES if (v := getattr(self, k)))
        return f"{scheme}://{user}{self.host}:{self.port}" + (f"?{query}" if query else "")


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
    if parts.path not in ("", "/") or parts.fragment:
        raise LinkError(f"invalid broker URL {url!r}: expected mqtt://host:port with nothing after the port")
    files: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in TLS_FILES or not value:
            raise LinkError(f"invalid broker URL {url!r}: only ?ca=FILE&cert=FILE&key=FILE may follow the port")
        files[name] = value
    if port == 0:
        raise LinkError(f"invalid broker URL {url!r}: port 0")
    tls = SCHEMES[scheme]
    if files and not tls:
        raise LinkError(f"invalid broker URL {url!r}: certificate files need mqtts://")
    if ("cert" in files) != ("key" in files):
        raise LinkError(f"invalid broker URL {url!r}: a client certificate needs its key (cert= and key=)")
    return BrokerUrl(
        host=parts.hostname,
        port=port if port is not None else (DEFAULT_TLS_PORT if tls else DEFAULT_PORT),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        tls=tls,
        **files,
    )
