"""`tinymlops keys init|list|export-public|rotate`: the operator's image-signing keys.

Private keys go to the OS keyring, else to a 0600 file encrypted with $TINYMLOPS_KEY_PASSPHRASE
(unencrypted, with a warning, only where neither exists). `export-public` writes the PEM public key
to standard output or FILE: that is what a device's trust store or another operator needs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from app.protocol.framing import DEFAULT_BAUD
from app.transport.local_broker import BROKER_HELP
from app.trust.keys import STORAGE_FILE_PLAIN, KeyStore


def register(sub) -> None:
    keys = sub.add_parser("keys", help="image-signing keys: init, list, export-public, rotate",
                          description=__doc__.split("\n\n")[1].replace("\n", " "))
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    p = ksub.add_parser("init", help="create the operator's first signing key (Ed25519)")
    p.set_defaults(func=_init)
    p = ksub.add_parser("list", help="every key with its fingerprint id, status and where it is kept")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_list)
    p = ksub.add_parser("export-public", help="write the active (or --key ID) public key as PEM")
    p.add_argument("file", nargs="?", type=Path, help="output file (default: standard output)")
    p.add_argument("--key", help="key id (or a unique prefix); default the active key")
    p.set_defaults(func=_export)
    p = ksub.add_parser("rotate", help="retire the active key and make a new one (old signatures still verify)")
    p.set_defaults(func=_rotate)
    p = ksub.add_parser("provision", help="put this operator's public keys into a device's trust store "
                        "(TRUST_ADD: taken while the store is empty, else vouched for by a key it holds)")
    p.add_argument("--device", help="device id (MQTT; checked against the device on a serial port)")
    p.add_argument("--via", choices=("mqtt", "serial"), default="mqtt")
    p.add_argument("--broker", help=BROKER_HELP)
    p.add_argument("--port", help="serial port, pty or socket://host:port (with --via serial)")
    p.add_argument("--baud", type=int, default=DEFAULT_BAUD)
    p.set_defaults(func=_provision)


def _describe(info) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.created))
    warn = "  (WARNING: private key not encrypted)" if info.storage == STORAGE_FILE_PLAIN else ""
    return f"{info.id}  {info.status:<8} {when}  {info.storage}{warn}"


def _init(args: argparse.Namespace) -> int:
    info = KeyStore().init()
    print(_describe(info))
    return 0


def _list(args: argparse.Namespace) -> int:
    keys = KeyStore().list()
    if args.json:
        print(json.dumps([{"id": k.id, "public": k.public, "status": k.status, "storage": k.storage,
                           "created": k.created} for k in keys], indent=2))
        return 0
    if not keys:
        print("no signing key yet: `tinymlops keys init` (or the first registered model) makes one")
        return 0
    for info in keys:
        print(_describe(info))
    return 0


def _export(args: argparse.Namespace) -> int:
    store = KeyStore()
    info = store.get(args.key) if args.key else (store.active() or store.init())
    pem = info.public_pem()
    if args.file:
        args.file.write_text(pem)
        print(f"wrote public key {info.id} to {args.file}")
    else:
        print(pem, end="")
    return 0


def _provision(args: argparse.Namespace) -> int:
    from app.deploy.provision import provision

    result = provision(args.device, via=args.via, broker=args.broker, port=args.port, baud=args.baud)
    added = ", ".join(result.added) or "none (it held them already)"
    print(f"{result.device}: trust store holds {result.trust_keys} key(s); added {added}")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    old, new = KeyStore().rotate()
    if old is not None:
        print(f"retired {old.id}")
    print(_describe(new))
    return 0
