"""`tinymlops broker kit`: certificates, mosquitto.conf and ACL for a plant's Mosquitto.

Writes a CA, a server certificate, one client certificate per device and per operator (the
certificate's CN is the MQTT identity), a `mosquitto.conf` with a TLS listener that requires client
certificates, and an ACL that confines each device to its own topics. With an operator password
($TINYMLOPS_BROKER_PASSWORD, the OS keyring entry for operator@host:password-port, or typed at the
prompt on a terminal; never an argument) it also writes a Mosquitto password file and a second TLS
listener for logging in with it. Prints how to start it and the URLs to connect with.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from app.transport.credentials import PASSWORD_ENV, password_for
from app.transport.urls import BrokerUrl
from app.trust import broker_kit


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def register(sub) -> None:
    broker = sub.add_parser("broker", help="a plant broker kit (TLS certificates, mosquitto.conf, ACL)",
                            description=__doc__.split("\n\n")[1].replace("\n", " "))
    bsub = broker.add_subparsers(dest="broker_command", metavar="ACTION", required=True)
    p = bsub.add_parser("kit", help="write a broker kit for one site")
    p.add_argument("--site", required=True, help="site name, as in the devices' locations (plant-a)")
    p.add_argument("--devices", required=True, type=_names, help="device ids, comma separated")
    p.add_argument("--operators", type=_names, default=["operator"],
                   help="operator identities, comma separated (default: operator)")
    p.add_argument("--host", action="append", dest="hosts", metavar="NAME",
                   help="broker host name or IP in its certificate (repeat; default localhost)")
    p.add_argument("--port", type=int, default=broker_kit.DEFAULT_TLS_PORT, help="TLS port (default 8883)")
    p.add_argument("--password-port", type=int, default=broker_kit.DEFAULT_PASSWORD_PORT,
                   help="TLS port where operators log in with a password (default 8884)")
    p.add_argument("--out", type=Path, required=True, help="folder to write the kit into (must be new)")
    p.set_defaults(func=cmd_kit)


def _prompt(name: str, where: str) -> str | None:
    """Ask on the terminal (twice); None when the two differ or nothing was typed."""
    first = getpass.getpass(f"broker password for operator {name} ({where}): ")
    if first and getpass.getpass("again: ") == first:
        return first
    print("passwords empty or not the same: no password for " + name, file=sys.stderr)
    return None


def operator_passwords(operators: list[str], host: str, port: int) -> dict[str, str]:
    """Each operator's password from the same sources a connection uses (app.transport.credentials),
    else the terminal's prompt; operators with none are left out."""
    found = {}
    for name in operators:
        url = BrokerUrl(host=host, port=port, username=name, tls=True)
        password = password_for(url)
        if password is None and sys.stdin.isatty():
            password = _prompt(name, f"{host}:{port}")
        if password:
            found[name] = password
    return found


def cmd_kit(args: argparse.Namespace) -> int:
    spec = broker_kit.KitSpec(args.site, args.devices, args.operators, args.hosts or ["localhost"], args.port,
                              password_port=args.password_port)
    host = spec.hosts[0]
    passwords = operator_passwords(spec.operators, host, spec.password_port)
    paths = broker_kit.write_kit(spec, args.out, operator_passwords=passwords)
    kit = paths["dir"]
    print(f"broker kit for {spec.site} in {kit}: {len(spec.devices)} device and "
          f"{len(spec.operators)} operator certificate(s), CA, mosquitto.conf, acl"
          + (f", password file for {', '.join(passwords)}" if passwords else ""))
    print(f"start the broker:   mosquitto -c {paths['conf']}")
    print("operator connects:  tinymlops fleet list --broker '"
          + broker_kit.client_url(kit, host, spec.port, "operators", spec.operators[0]) + "'")
    if passwords:
        name = next(iter(passwords))
        print("  or by password:   tinymlops fleet list --broker '"
              + broker_kit.password_url(kit, host, spec.password_port, name) + f"' (password from ${PASSWORD_ENV} "
              "or the OS keyring)")
    else:
        print(f"no operator password (${PASSWORD_ENV}, the OS keyring or a terminal): no password file; "
              "operators log in with their certificates", file=sys.stderr)
    print("virtual devices:    tinymlops sim --broker '"
          + broker_kit.client_url(kit, host, spec.port, "devices", "{device}") + "'")
    print(f"keep {kit / 'ca.key'} offline: it issues identities")
    return 0
