"""`tinymlops sim`: run a virtual device fleet with a compact terminal view; `sim fault` sends SET_FAULT.

`--engine c` runs the devices as processes of the firmware's C core (firmware/ports/posix) instead
of the Python virtual devices: the same topics and protocol, so the GUI, the CLI and deployments see
them as they see any device; the view then shows what the broker says of them (FleetMonitor)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from app.domain.errors import DeviceError, LinkError, TinyMLOpsError
from app.protocol.codes import FaultMask
from app.transport.local_broker import BROKER_HELP, announce

# The terminal view refreshes this often.
VIEW_REFRESH_S = 1.0
# `sim fault` waits this long for the device's ACK.
FAULT_REPLY_TIMEOUT_S = 10.0
# Retained statuses arrive right after subscribing; a device not seen by then is not on the broker.
DEVICE_SEEN_TIMEOUT_S = 3.0
ENGINES = ("python", "c")


def _fault_arg(text: str) -> tuple[str, int, float]:
    """DEVICE=MASK[:SEVERITY], MASK a number or names joined by '|' (imbalance|bearing_outer)."""
    try:
        device, spec = text.split("=", 1)
        mask_text, _, sev_text = spec.partition(":")
        return device, _mask(mask_text), float(sev_text) if sev_text else 0.8
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected DEVICE=MASK[:SEVERITY], got {text!r}: {exc}") from exc


def _mask(text: str) -> int:
    if text.strip().isdigit():
        return int(text)
    mask = 0
    for name in text.split("|"):
        try:
            mask |= FaultMask[name.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(f.name.lower() for f in FaultMask)}") from None
    return mask


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sim", help="run a virtual device fleet (embedded broker unless --broker)")
    p.add_argument("--devices", type=int, default=5, help="number of virtual devices (default 5)")
    p.add_argument("--engine", choices=ENGINES, default="python",
                   help="python: virtual devices in this process (default); c: the firmware's C core as one "
                   "process per device (firmware/ports/posix; MQTT only, ids c-001..)")
    p.add_argument("--broker", help="mqtt://host:port of an existing broker (default: start the embedded one)")
    p.add_argument("--serial", action="store_true", help="also give every device a pty (paths are printed)")
    p.add_argument("--baud", type=int, help="emulate a UART at this baud on the ptys (8N1)")
    p.add_argument("--seed", type=int, default=0, help="simulation seed")
    p.add_argument("--telemetry-period", type=float, default=1.0, metavar="S",
                   help="seconds between an idle device's telemetry (default 1; >= 1, larger for big fleets)")
    p.add_argument("--fault", type=_fault_arg, action="append", default=[], metavar="DEVICE=MASK[:SEV]",
                   help="boot a device with a fault, e.g. sim-002=bearing_outer:0.7 (repeatable)")
    p.add_argument("--trust", action="append", default=[], type=Path, metavar="PEM",
                   help="public key(s) the devices accept images from (repeatable; default: this operator's "
                   "own keys, so deployments from this machine work)")
    p.add_argument("--unprovisioned", action="store_true",
                   help="devices with an empty trust store: they take unsigned images")
    p.set_defaults(func=run_sim)
    fsub = p.add_subparsers(dest="sim_command", metavar="SUBCOMMAND")
    f = fsub.add_parser("fault", help="switch a running device's simulated fault (SET_FAULT)")
    f.add_argument("--device", required=True)
    f.add_argument("--mask", required=True, type=_mask, help="number or names: imbalance|misalignment|"
                   "bearing_outer|bearing_inner|looseness; 0 clears")
    f.add_argument("--severity", type=float, default=0.8)
    f.add_argument("--broker", help=BROKER_HELP)
    f.set_defaults(func=run_fault)


def _trust(args: argparse.Namespace) -> list[bytes] | None:
    """The devices' trust store (PROTOCOL.md 6.2): --trust files, else this operator's keys."""
    from app.trust.keys import KeyStore, load_public_keys

    if args.unprovisioned:
        return None
    if args.trust:
        return [key for path in args.trust for key in load_public_keys(path)]
    store = KeyStore()
    store.ensure()
    return store.public_keys()


def run_sim(args: argparse.Namespace) -> int:
    with _stop_on_signals() as stop:
        return _run_sim(args, stop)


def _run_sim(args: argparse.Namespace, stop: threading.Event) -> int:
    from app.fleet.fleet import VirtualFleet

    if args.devices < 1:
        raise TinyMLOpsError("--devices must be at least 1")
    if args.engine == "c":
        _check_c_options(args)
    broker = None
    url = args.broker
    if url is None:
        from app.transport.broker import EmbeddedBroker

        broker = EmbeddedBroker()
        url = broker.start()
    withdraw = announce(url) if broker else (lambda: None)  # `fleet list`, `deploy`... find this fleet
    if args.engine == "c":
        try:
            return _run_c(args, url, stop)
        finally:
            withdraw()
            if broker:
                broker.stop()
    faults = {device: (mask, sev) for device, mask, sev in args.fault}
    try:
        fleet = VirtualFleet(url, args.devices, seed=args.seed, serial=args.serial, baud=args.baud, faults=faults,
                             telemetry_period_s=args.telemetry_period, trust=_trust(args))
    except ValueError as exc:
        withdraw()
        if broker:
            broker.stop()
        raise TinyMLOpsError(str(exc)) from exc
    print(f"broker: {url}")
    try:
        with fleet:
            for device_id, path in fleet.serial_ports.items():
                print(f"serial: {device_id} {path}" + (f" ({args.baud} baud)" if args.baud else ""))
            print("Ctrl-C to stop")
            _view(fleet, stop)
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        pass
    finally:
        withdraw()
        if broker:
            broker.stop()
    return 0


def _check_c_options(args: argparse.Namespace) -> None:
    """Options the C devices do not have: a clear error instead of silently ignoring them."""
    unsupported = [name for name, given in (("--serial", args.serial), ("--baud", args.baud is not None),
                                            ("--fault", bool(args.fault)),
                                            ("--telemetry-period", args.telemetry_period != 1.0)) if given]
    if unsupported:
        raise TinyMLOpsError(f"--engine c does not take {', '.join(unsupported)} (its devices speak MQTT at 1 Hz; "
                             "a C device on a pty: `tinymlops-device --pty`, firmware/ports/posix/README.md; "
                             "switch a fault with `tinymlops sim fault`)")


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """Ctrl-C and SIGTERM end the view at its next refresh, so the fleet, its ptys and the broker stop
    in order; a KeyboardInterrupt raised wherever the main thread happened to be (inside a stop path,
    holding a lock) could leave the process hung. A second Ctrl-C interrupts as usual. The previous
    handlers come back afterwards (the command also runs inside other programs: tests, scripts)."""
    stop = threading.Event()

    def handler(_signum, _frame) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in signals}
    in_main = threading.current_thread() is threading.main_thread()  # only the main thread may set them
    if in_main:
        for sig in signals:
            signal.signal(sig, handler)
    try:
        yield stop
    finally:
        if in_main:
            for sig, old in previous.items():
                signal.signal(sig, old)


def _run_c(args: argparse.Namespace, url: str, stop: threading.Event) -> int:
    from app.fleet.c_device import CDeviceFleet
    from app.services.fleet_monitor import FleetMonitor
    from app.transport.mqtt_link import MqttConnection

    try:
        fleet = CDeviceFleet(url, args.devices, seed=args.seed, trust=_trust(args))
    except ValueError as exc:
        raise TinyMLOpsError(str(exc)) from exc
    print(f"broker: {url}")
    conn = MqttConnection(url)
    try:
        with fleet:
            for dev in fleet.devices:
                print(f"c device: {dev.device_id} pid {dev.process.pid if dev.process else '?'} flash {dev.flash_path}")
            print("Ctrl-C to stop")
            conn.connect()
            with FleetMonitor(conn) as monitor:
                _view_monitor(monitor, [d.device_id for d in fleet.devices], stop)
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        pass
    finally:
        conn.close()
    return 0


def _draw(rows: list[str], lines: int) -> int:
    interactive = sys.stdout.isatty()
    if interactive and lines:
        sys.stdout.write(f"\x1b[{lines}F")  # move up and redraw in place
    sys.stdout.write("\n".join(r + ("\x1b[K" if interactive else "") for r in rows) + "\n")
    sys.stdout.flush()
    return len(rows)


def _view_monitor(monitor, device_ids: list[str], stop: threading.Event) -> None:
    """The terminal view of devices in other processes: what their status and telemetry say."""
    lines = 0
    while not stop.is_set():
        rows = [f"{'device':<9} {'location':<24} {'profile':<15} {'model':<14} {'score':>9} {'thresh':>8}  state"]
        for device_id in device_ids:
            rec = monitor.get(device_id)
            if rec is None:
                rows.append(f"{device_id:<9} (not seen yet)")
                continue
            name = f"{rec.model_name}@{rec.model_version}" if rec.model_name else "-"
            score = f"{rec.score:>9.3f}" if rec.score is not None else f"{'-':>9}"
            thresh = f"{rec.threshold:>8.3f}" if rec.threshold is not None else f"{'-':>8}"
            verdict = "offline" if not rec.online else "ALARM" if rec.alarm else "ok"
            rows.append(f"{device_id:<9} {rec.location:<24} {rec.profile:<15} {name:<14} {score} {thresh}  "
                        f"{verdict}{' trial' if rec.trial else ''}")
        lines = _draw(rows, lines)
        stop.wait(VIEW_REFRESH_S)


def _view(fleet, stop: threading.Event) -> None:
    lines = 0
    while not stop.is_set():
        rows = [f"{'device':<9} {'location':<24} {'profile':<15} {'model':<14} {'score':>9} {'thresh':>8}  state"]
        for dev in fleet.devices:
            model = dev.active_model
            name = f"{model.image.name}@{model.image.version}" if model else "-"
            threshold = model.image.threshold if model else 0.0
            alarm = "ALARM" if model and dev.last_score > threshold else "ok"
            rows.append(f"{dev.device_id:<9} {dev.location:<24} {dev.profile.key:<15} {name:<14} "
                        f"{dev.last_score:>9.3f} {threshold:>8.3f}  {alarm}{' trial' if dev.trial else ''}")
        lines = _draw(rows, lines)
        stop.wait(VIEW_REFRESH_S)


def run_fault(args: argparse.Namespace) -> int:
    from app.deploy.links import broker_connection
    from app.protocol import messages as m
    from app.services.channel import MqttChannel
    from app.services.fleet_monitor import FleetMonitor

    with broker_connection(args.broker) as conn, FleetMonitor(conn) as monitor:
        deadline = time.monotonic() + DEVICE_SEEN_TIMEOUT_S
        while (record := monitor.get(args.device)) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if record is None:
            raise LinkError(f"device {args.device} not seen on {conn.url.address}")
        channel = MqttChannel(conn, record.site, args.device)
        try:
            channel.request(m.SetFault(args.mask, args.severity), timeout=FAULT_REPLY_TIMEOUT_S)
        except DeviceError as exc:
            raise TinyMLOpsError(f"{args.device} refused the fault: {exc}") from exc
        finally:
            channel.close()
    print(f"{args.device}: fault mask {args.mask} severity {args.severity}")
    return 0
