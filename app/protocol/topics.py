"""MQTT topic tree of protocol v1 (firmware/PROTOCOL.md section 2.2)."""

from __future__ import annotations

import functools
import re

ROOT = "tinymlops/v1"
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

# Parsed device topics remembered: every device sends on the same few topics each second, so each is
# split once, not per message; this many covers a 10,000-device fleet's status, telemetry and
# stream topics (about 0.3 KB an entry), and a flood of made-up topics only evicts, never grows.
PARSE_CACHE_MAX = 32768

STATUS = "status"
TELEMETRY = "telemetry"
STREAM = "stream"
CMD = "cmd"
REPLY = "reply"


def valid_id(value: str) -> bool:
    """Ids and sites become topic elements: no '/', '+', '#', no empty string."""
    return bool(_ID.fullmatch(value))  # not match(): `$` also matches before a trailing newline


def device_topic(site: str, device: str, leaf: str) -> str:
    return f"{ROOT}/{site}/{device}/{leaf}"


def model_chunk_prefix(site: str, sha256_hex: str) -> str:
    return f"{ROOT}/{site}/models/{sha256_hex}"


def all_status() -> str:
    return f"{ROOT}/+/+/{STATUS}"


@functools.lru_cache(maxsize=PARSE_CACHE_MAX)
def parse_device_topic(topic: str) -> tuple[str, str, str] | None:
    """(site, device, leaf) for a device topic, None for anything else (model chunks included)."""
    parts = topic.split("/")
    if len(parts) != 5 or f"{parts[0]}/{parts[1]}" != ROOT or parts[3] == "models":
        return None
    return parts[2], parts[3], parts[4]
