"""Provisioning a device's trust store and pushing revocations over its own link (PROTOCOL.md 6.2).

`provision` sends TRUST_ADD for each of this operator's public keys the device lacks, active key
first. A device with an empty store takes the first key as it is; every further key must be
vouched for by a key the device already holds, so the add is signed with one of ours (the active
key, else a retired one: after `keys rotate`, the old key vouches for the new). `revoke` sends a
REVOKE signed by the active key. Both need caps TRUST_ADMIN (the virtual devices and the C core
have it); a device without it (an older firmware, keys compiled in only) gets a clear refusal, never
a command it lacks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from app.deploy import links
from app.domain.errors import DeviceError, LinkError
from app.protocol.codes import Caps, ErrorCode
from app.protocol.messages import Hello, Revoke, TrustAdd
from app.trust.keys import KeyStore
from app.trust.signing import revoke_statement, sign_statement, trust_add_statement

log = logging.getLogger(__name__)

# A trust-store command is answered at once (no flash-sized work); a loaded link gets this long.
ADMIN_TIMEOUT_S = 5.0
# A key add is not repeated blindly: a lost reply is resolved by the next GET_INFO's trust_keys.
ADMIN_RETRIES = 1
NO_AUTH = b"\0" * 80  # what TRUST_ADD carries into an empty store


@dataclass
class ProvisionResult:
    device: str
    trust_keys: int  # keys in the device's store afterwards
    added: list[str]  # key ids this call added


def _require_admin(hello: Hello, device: str) -> None:
    if not hello.caps & Caps.TRUST_ADMIN:
        raise LinkError(f"device {device} does not take trust-store commands (no TRUST_ADMIN): its keys are "
                        "set when its firmware is built (make TRUST_KEYS=operator.pem)")


def provision(device: str | None = None, *, via: str = "mqtt", broker: str | None = None, port: str | None = None,
              baud: int = links.DEFAULT_BAUD, keys: KeyStore | None = None) -> ProvisionResult:
    store = keys or KeyStore()
    store.ensure()
    ours = sorted(store.list(), key=lambda k: k.status != "active")
    with links.open_device(device, via, broker, port, baud) as link:
        dev = link.hello.device_id
        _require_admin(link.hello, dev)
        count, added = link.hello.trust_keys, []
        for info in ours:
            auth = NO_AUTH if count == 0 else None
            # the device's store does not say which keys it holds: try each of ours as the voucher
            for voucher in ([None] if auth is not None else ours):
                body = auth if voucher is None else sign_statement(
                    trust_add_statement(info.public_raw), store.private_key(voucher)).to_bytes()
                try:
                    reply = link.channel.request(TrustAdd(info.public_raw, body), timeout=ADMIN_TIMEOUT_S,
                                                 retries=ADMIN_RETRIES).msg
                except DeviceError as exc:
                    if exc.code == ErrorCode.BAD_SIGNATURE:
                        continue  # that voucher is not in the device's store; try the next
                    raise
                if reply.trust_keys > count:
                    added.append(info.id)
                count = reply.trust_keys
                break
            else:
                raise DeviceError(f"device {dev} holds none of this operator's keys, so it refuses to add "
                                  f"{info.id}: provision it from the operator whose key it trusts",
                                  code=ErrorCode.BAD_SIGNATURE)
        log.info("device %s: trust store holds %d key(s), added %s", dev, count, ", ".join(added) or "none")
        return ProvisionResult(dev, count, added)


def revoke(name: str, version: int, device: str | None = None, *, via: str = "mqtt", broker: str | None = None,
           port: str | None = None, baud: int = links.DEFAULT_BAUD, keys: KeyStore | None = None) -> str:
    """Send one signed revocation; returns the device id that took it."""
    store = keys or KeyStore()
    auth = sign_statement(revoke_statement(name, version), store.private_key()).to_bytes()
    with links.open_device(device, via, broker, port, baud) as link:
        _require_admin(link.hello, link.hello.device_id)
        link.channel.request(Revoke(name, version, auth), timeout=ADMIN_TIMEOUT_S, retries=ADMIN_RETRIES)
        return link.hello.device_id
