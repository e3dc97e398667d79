"""`tinymlops broker kit`: certificates, mosquitto.conf and ACL for a plant's Mosquitto.

Writes a CA, a server certificate, one client certificate per device and per operator (the
certificate's CN is the MQTT identity), a `mosquitto.conf` with a TLS listener that requires client
certificates, and an ACL that confines each device to its own topics. Prints how to start it and the
URLs the operator and the devices connect with.
"""

from __future__ import annotations

import argparse
from pathlib import Path

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
    p.add_argument("--out", type=Path, required=True, help="folder to write the kit into (must be new)")
    p.set_defaults(func=cmd_kit)


def cmd_kit(args: argparse.Namespace) -> int:
    spec = broker_kit.KitSpec(args.site, args.devices, args.operators, args.hosts or ["localhost"], args.port)
    paths = broker_kit.write_kit(spec, args.out)
    kit, host = paths["dir"], spec.hosts[0]
    print(f"broker kit for {spec.site} in {kit}: {len(spec.devices)} device and "
          f"{len(spec.operators)} operator certificate(s), CA, mosquitto.conf, acl")
    print(f"start the broker:   mosquitto -c {paths['conf']}")
    print("operator connects:  tinymlops fleet list --broker '"
          + broker_kit.client_url(kit, host, spec.port, "operators", spec.operators[0]) + "'")
    print("virtual devices:    tinymlops sim --broker '"
          + broker_kit.client_url(kit, host, spec.port, "devices", "{device}") + "'")
    print(f"keep {kit / 'ca.key'} offline: it issues identities")
    return 0
