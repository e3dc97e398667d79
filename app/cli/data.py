"""`tinymlops data record|import|list`: datasets of raw vibration for training."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# A device's retained HELLO arrives within milliseconds of subscribing; a device not seen in this
# long is not on that broker.
DEVICE_WAIT_S = 5.0
# Time for STREAM_START to reach the device and the first windows to come back, beyond the
# recording itself.
STREAM_START_GRACE_S = 10.0
# A recording may take this factor of its nominal length (lost windows are replaced by later ones).
RECORD_TIME_FACTOR = 1.5
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"


def register(sub) -> None:
    data = sub.add_parser("data", help="record, import and list datasets",
                          description="Datasets of raw 3-axis vibration (g) for training and evaluation.")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    p = dsub.add_parser("record", help="record a device's raw stream over MQTT into a dataset")
    p.add_argument("--device", required=True, metavar="ID")
    p.add_argument("--seconds", type=float, required=True, metavar="S")
    p.add_argument("--label", choices=("normal", "fault"), required=True)
    p.add_argument("--broker", default=DEFAULT_BROKER, help=f"mqtt://[user:pass@]host:port (default {DEFAULT_BROKER})")
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

    p = dsub.add_parser("list", help="stored datasets")
    p.add_argument("--label", choices=("normal", "fault"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)


def record(broker: str, device: str, seconds: float, progress=None):
    """(samples, HELLO-derived metadata) recorded from `device`'s STREAM over MQTT."""
    from app.domain.errors import DataError, LinkError
    from app.ml.datasets import MAX_SAMPLES, MIN_DATASET_WINDOWS
    from app.ml.features import DEFAULT_SPEC
    from app.ml.recording import StreamRecorder
    from app.services.fleet_monitor import FleetMonitor
    from app.transport.mqtt_link import MqttConnection

    recorder = StreamRecorder(seconds, progress=progress)
    if recorder.windows < MIN_DATASET_WINDOWS:
        shortest = MIN_DATASET_WINDOWS * DEFAULT_SPEC.window / DEFAULT_SPEC.sample_rate
        raise DataError(f"{seconds} s gives {recorder.windows} windows; a dataset needs at least "
                        f"{MIN_DATASET_WINDOWS} ({shortest:.1f} s)")
    if recorder.windows * DEFAULT_SPEC.window > MAX_SAMPLES:
        longest = MAX_SAMPLES / DEFAULT_SPEC.sample_rate
        raise DataError(f"{seconds:g} s is longer than one dataset holds (at most {longest:.0f} s); record "
                        "several shorter datasets and train on all of them (--data repeats)")
    conn = MqttConnection(broker)
    conn.connect()
    monitor = FleetMonitor(conn)
    try:
        deadline = time.monotonic() + DEVICE_WAIT_S
        while monitor.get(device) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        rec = monitor.get(device)
        if rec is None:
            known = ", ".join(sorted(r.device_id for r in monitor.devices())) or "none"
            raise LinkError(f"device {device!r} is not on {conn.url.address} (devices seen: {known})")
        if not rec.online:
            raise LinkError(f"device {device!r} is offline (last seen {time.ctime(rec.last_seen)})")

        def on_stream(_device_id, msg):
            recorder.feed(msg)

        monitor.add_stream_listener(device, on_stream)
        try:
            finished = recorder.wait(seconds * RECORD_TIME_FACTOR + STREAM_START_GRACE_S)
        finally:
            monitor.remove_stream_listener(device, on_stream)
        if recorder.error is not None:
            raise recorder.error
        if not finished:
            got = len(recorder.samples()) // DEFAULT_SPEC.window
            if recorder.received == 0:
                raise LinkError(f"device {device!r} sent no stream windows (is it online and able to stream?)")
            raise LinkError(f"device {device!r} delivered {got} of {recorder.windows} windows in time "
                            f"({recorder.gaps} gaps in the stream)")
        rec = monitor.get(device) or rec
        meta = {"device": device, "location": rec.location, "profile": rec.profile, "firmware": rec.firmware,
                "model": f"{rec.model_name}@{rec.model_version}", "shaft_hz": rec.shaft_hz,
                "fault_mask": rec.hello.fault_mask if rec.hello else None,
                "stream_gaps": recorder.gaps, "broker": conn.url.address}
        return recorder.samples(), meta
    finally:
        monitor.close()
        conn.close()


def cmd_record(args: argparse.Namespace) -> int:
    from app.cli.model import ProgressPrinter
    from app.ml.datasets import DatasetStore
    from app.ml.features import DEFAULT_SPEC

    progress = ProgressPrinter()
    samples, meta = record(args.broker, args.device, args.seconds, progress)
    progress.done()
    with DatasetStore() as store:
        ds = store.add(samples, DEFAULT_SPEC.sample_rate, args.label, source=f"device:{args.device}",
                       notes=args.notes, meta=meta)
    print(f"recorded {ds.windows} windows ({ds.n_samples / ds.sample_rate:.1f} s) from {args.device}, "
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
