"""`tinymlops data record|import|list`: datasets of raw vibration for training."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from app.protocol.framing import DEFAULT_BAUD
from app.transport.local_broker import BROKER_HELP

if TYPE_CHECKING:  # numpy and the recorder load only when a command runs
    import numpy as np

    from app.ml.recording import ProgressFn

# A device's retained HELLO arrives within milliseconds of subscribing; a device not seen in this
# long is not on that broker.
DEVICE_WAIT_S = 5.0
# How often the wait for a device's HELLO looks again.
DEVICE_POLL_S = 0.05
# Samples per STREAM message (PROTOCOL.md 4.3: devices send n = 256): what a stream costs on a line.
STREAM_SAMPLES_PER_MESSAGE = 256


def register(sub) -> None:
    data = sub.add_parser("data", help="record, import and list datasets",
                          description="Datasets of raw 3-axis vibration (g) for training and evaluation.")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    p = dsub.add_parser("record", help="record a device's raw stream over MQTT or a serial port into a dataset",
                        description="Record a device's raw 3-axis stream into a dataset: through a broker "
                        "(--via mqtt, the default) or straight from its serial port (--via serial --port ...: "
                        "a USB cable, a pty of `tinymlops sim --serial`, or socket://host:port).")
    p.add_argument("--device", metavar="ID", help="device id (required over MQTT; over serial, checked "
                   "against the device on the port when given)")
    p.add_argument("--seconds", type=float, required=True, metavar="S")
    p.add_argument("--label", choices=("normal", "fault"), required=True)
    p.add_argument("--via", choices=("mqtt", "serial"), default="mqtt")
    p.add_argument("--broker", help=BROKER_HELP)
    p.add_argument("--port", help="serial: /dev/ttyUSB0, COM3, a pty path or socket://host:port")
    p.add_argument("--baud", type=int, default=DEFAULT_BAUD,
                   help=f"serial line rate (default {DEFAULT_BAUD}); a real UART must be fast enough for the "
                   "raw 3.2 kHz stream, e.g. 921600, set the same on the device")
    p.add_argument("--notes", default="")
    p.set_defaults(func=cmd_record)

    p = dsub.add_parser("import", help="import a recording: CSV (x,y,z in g, optional header) or .npy (n, 3)",
                        description="CSV: three columns x,y,z, acceleration in g, one row per sample, an "
                        "optional header row. NumPy: a .npy float array of shape (n, 3) in g. The sample "
                        "rate must be the feature spec's (3200 Hz).")
    p.add_argument("file", type=Path)
    p.add_argument("--rate", type=int, required=True, metavar="HZ", help="sample rate of the recording")
    p.add_argument("--label", choices=("normal", "fault"), required=True)
    p.add_argument("--notes", default="")
    p.set_defaults(func=cmd_import)

    p = dsub.add_parser("analyze", help="vibration analysis of a dataset: velocity RMS and ISO zone, order and "
                        "envelope spectra, the likely fault with its evidence",
                        description="Condition-monitoring analysis of a recording. The machine description "
                        "(`tinymlops machine set`) of --machine, else of the device that recorded the dataset, "
                        "gives shaft speed, bearing and ISO class; --shaft-hz, --bearing, --iso-group and "
                        "--foundation override it.")
    p.add_argument("dataset", metavar="DATASET", help="a dataset id (`data list`), or a .csv/.npy file with --rate")
    p.add_argument("--machine", metavar="DEVICE", help="the described machine the recording comes from")
    p.add_argument("--shaft-hz", type=float, metavar="F", help="nominal shaft speed, Hz")
    p.add_argument("--bearing", metavar="SPEC", help="catalogue bearing (6205, ...) or n=..,d=..,D=..,angle=..")
    p.add_argument("--iso-group", type=int, choices=(1, 2))
    p.add_argument("--foundation", choices=("rigid", "flexible"))
    p.add_argument("--rate", type=int, metavar="HZ", help="sample rate, for a file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_analyze)

    p = dsub.add_parser("list", help="stored datasets")
    p.add_argument("--label", choices=("normal", "fault"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)


def stream_baud() -> int:
    """Line rate (8N1) a device's raw stream needs at the feature spec's sample rate: its STREAM
    frames as they cross a serial line, 10 bit times per byte (telemetry comes on top)."""
    import numpy as np

    from app.ml.features import DEFAULT_SPEC
    from app.protocol import messages as m
    from app.protocol.framing import UART_BITS_PER_BYTE, frame

    window = np.zeros((STREAM_SAMPLES_PER_MESSAGE, len(DEFAULT_SPEC.axes)), np.int16)
    wire = len(frame(m.encode(m.Stream(0, DEFAULT_SPEC.sample_rate, 1.0, window), 0)))
    return round(wire * DEFAULT_SPEC.sample_rate / STREAM_SAMPLES_PER_MESSAGE * UART_BITS_PER_BYTE)


def record(broker: str | None, device: str, seconds: float,
           progress: ProgressFn | None = None) -> tuple[np.ndarray, dict]:
    """(samples, HELLO-derived metadata) recorded from `device`'s STREAM over MQTT (`broker` None:
    the running app's embedded broker, see app.transport.local_broker)."""
    from app.deploy.links import broker_connection
    from app.domain.errors import LinkError
    from app.ml.recording import new_recorder, record_stream
    from app.services.fleet_monitor import FleetMonitor

    recorder = new_recorder(seconds, progress)
    with broker_connection(broker) as conn, FleetMonitor(conn) as monitor:
        deadline = time.monotonic() + DEVICE_WAIT_S
        while monitor.get(device) is None and time.monotonic() < deadline:
            time.sleep(DEVICE_POLL_S)
        if monitor.get(device) is None:
            known = ", ".join(sorted(r.device_id for r in monitor.devices())) or "none"
            raise LinkError(f"device {device!r} is not on {conn.url.address} (devices seen: {known})")
        samples, meta = record_stream(monitor, device, recorder)
        return samples, {**meta, "transport": "mqtt", "broker": conn.url.address}


def record_serial(port: str, seconds: float, progress: ProgressFn | None = None, *, baud: int = DEFAULT_BAUD,
                  device: str | None = None) -> tuple[np.ndarray, dict]:
    """(samples, HELLO-derived metadata) recorded from the device on serial `port` (a cable, a pty,
    socket://host:port); LinkError when it is someone else than `device` (when given)."""
    from app.domain.errors import LinkError
    from app.ml.recording import new_recorder, record_stream
    from app.services.channel import SerialChannel
    from app.services.fleet_monitor import FleetMonitor

    recorder = new_recorder(seconds, progress)
    channel = SerialChannel.open(port, baud)
    monitor = FleetMonitor(None)
    try:
        monitor.attach_serial(channel)  # asks the device for its HELLO
        deadline = time.monotonic() + DEVICE_WAIT_S
        while not monitor.devices() and time.monotonic() < deadline:
            time.sleep(DEVICE_POLL_S)
        found = monitor.devices()
        if not found:
            raise LinkError(f"no device answered on {port} at {baud} baud within {DEVICE_WAIT_S:g} s "
                            "(is it a tinymlops device, and is the baud rate the device's?)")
        device_id = found[0].device_id
        if device is not None and device_id != device:
            raise LinkError(f"{port} is device {device_id!r}, not {device!r}")
        needed = stream_baud()
        hint = (f"; the raw stream needs about {needed} baud and this line runs at {baud}: use a faster "
                "rate on both ends (e.g. --baud 921600)") if baud < needed else ""
        samples, meta = record_stream(monitor, device_id, recorder, hint=hint)
        return samples, {**meta, "transport": "serial", "port": port, "baud": baud}
    finally:
        monitor.close()
        channel.close()


def cmd_record(args: argparse.Namespace) -> int:
    from app.cli.model import ProgressPrinter
    from app.domain.errors import DataError
    from app.ml.datasets import DatasetStore
    from app.ml.features import DEFAULT_SPEC

    if args.via == "serial" and not args.port:
        raise DataError("--via serial needs --port (e.g. /dev/ttyUSB0, a pty path or socket://host:port)")
    if args.via == "mqtt" and not args.device:
        raise DataError("--via mqtt needs --device ID (the device to record)")
    progress = ProgressPrinter()
    if args.via == "serial":
        samples, meta = record_serial(args.port, args.seconds, progress, baud=args.baud, device=args.device)
    else:
        samples, meta = record(args.broker, args.device, args.seconds, progress)
    progress.done()
    device = meta["device"]
    with DatasetStore() as store:
        ds = store.add(samples, DEFAULT_SPEC.sample_rate, args.label, source=f"device:{device}",
                       notes=args.notes, meta=meta)
    print(f"recorded {ds.windows} windows ({ds.n_samples / ds.sample_rate:.1f} s) from {device}, "
          f"label {ds.label}", file=sys.stderr)
    print(ds.id)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from app.ml.datasets import DatasetStore

    with DatasetStore() as store:
        ds = store.import_file(args.file, args.rate, args.label, notes=args.notes)
    print(f"imported {ds.windows} windows ({ds.n_samples / ds.sample_rate:.1f} s), label {ds.label}",
          file=sys.stderr)
    print(ds.id)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from app.ml.datasets import DatasetStore

    with DatasetStore() as store:
        items = store.list(args.label)
    if args.json:
        print(json.dumps([d.to_dict() for d in items], indent=2))
        return 0
    if not items:
        print("no datasets yet: `tinymlops data record ...` or `tinymlops data import ...`")
        return 0
    print(f"{'id':<16} {'label':<7} {'windows':>7} {'seconds':>8} {'rate':>5}  {'created':<16} source")
    for d in items:
        print(f"{d.id:<16} {d.label:<7} {d.windows:>7} {d.n_samples / d.sample_rate:>8.1f} {d.sample_rate:>5}  "
              f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(d.created)):<16} {d.source}")
    return 0


def load_recording(ref: str, rate: int | None) -> tuple[np.ndarray, float, dict]:
    """(samples, sample rate, metadata) of a dataset id or a .csv/.npy file (which needs `rate`)."""
    import numpy as np

    from app.domain.errors import DataError
    from app.ml.datasets import DatasetStore, read_file

    path = Path(ref)
    if path.suffix.lower() in (".csv", ".npy"):
        if not rate:
            raise DataError(f"{path.name}: give its sample rate with --rate HZ")
        return np.asarray(read_file(path), np.float64), float(rate), {"source": f"file:{path.name}"}
    with DatasetStore() as store:
        ds = store.get(ref)
        return store.samples(ds), float(ds.sample_rate), {**(ds.meta or {}), "source": ds.source, "id": ds.id}


def print_analysis(a) -> None:
    """The analysis as an engineer reads it: zone first, then the call and its evidence, then lines."""
    print(f"overall velocity  {a.velocity_overall_mm_s:.2f} mm/s RMS (10-1000 Hz; x {a.velocity_mm_s[0]:.2f}, "
          f"y {a.velocity_mm_s[1]:.2f}, z {a.velocity_mm_s[2]:.2f})")
    print(f"ISO zone          {a.zone.zone} ({a.zone.meaning}; {a.zone.machine_class}, boundaries "
          f"{' / '.join(f'{b:g}' for b in a.zone.boundaries)} mm/s)")
    print(f"shaft speed       {a.shaft_hz:.3f} Hz estimated ({a.shaft_hz * 60:.0f} rpm; "
          f"nominal {a.shaft_nominal_hz:g} Hz)")
    print(f"diagnosis         {a.fault}" + (f" (also: {', '.join(a.also)})" if a.also else ""))
    for line in a.evidence:
        print(f"  - {line}")
    print(f"spectra           {a.seconds:.1f} s at {a.sample_rate:g} Hz, lines {a.resolution_hz:.3f} Hz apart; "
          f"envelope band {a.envelope_band_hz[0]:.0f}-{a.envelope_band_hz[1]:.0f} Hz")
    print(f"{'marker':<9} {'expected Hz':>11} {'found Hz':>9} {'amplitude g':>12} {'x floor':>8}")
    for m in a.order_markers[:6] + a.defect_markers:
        print(f"{m.name:<9} {m.expected_hz:>11.2f} {m.found_hz:>9.2f} {m.amplitude:>12.5f} {m.snr:>8.1f}")


def cmd_analyze(args: argparse.Namespace) -> int:
    from app.analysis.bearings import parse_bearing
    from app.analysis.machines import MachineStore
    from app.analysis.runner import Overrides, analyze_recording
    from app.domain.errors import DataError

    if args.foundation and args.iso_group is None:
        raise DataError("--foundation goes with --iso-group 1 or 2")
    overrides = Overrides(args.shaft_hz, parse_bearing(args.bearing) if args.bearing else None,
                          args.iso_group, args.foundation)
    samples, rate, meta = load_recording(args.dataset, args.rate)
    device = args.machine or meta.get("device")
    with MachineStore() as machines:
        machine = machines.get(args.machine) if args.machine else (machines.find(device) if device else None)
    a = analyze_recording(samples, rate, machine, overrides, meta.get("shaft_hz"))
    if args.json:
        print(json.dumps({"dataset": meta.get("id", args.dataset), "machine": device, **a.to_dict()}, indent=2))
    else:
        print(f"recording         {meta.get('id', args.dataset)} ({meta.get('source', '')})"
              + (f", machine {device}" if device else ""))
        print_analysis(a)
    return 0
