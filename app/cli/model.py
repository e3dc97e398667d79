"""`tinymlops model train|list|show|check|import|export|mlperf`: the model pipeline and registry."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# Redraw a terminal progress bar at most this often (an epoch can take milliseconds).
PROGRESS_REDRAW_S = 0.1
BAR_WIDTH = 30
# Without a terminal (CI log, `| tee`) a long stage still prints a line this often.
LOG_PROGRESS_EVERY_S = 5.0


class ProgressPrinter:
    """progress(stage, fraction, message) -> a bar on a terminal (stderr), plain lines otherwise."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last = 0.0
        self._stage = None
        self._open_line = False  # a bar drawn without its final newline

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        now = time.monotonic()
        fraction = min(max(fraction, 0.0), 1.0)
        if self.tty:
            if now - self._last < PROGRESS_REDRAW_S and fraction < 1.0 and stage == self._stage:
                return
            if self._open_line and stage != self._stage:
                self.stream.write("\n")  # keep the last state of the stage before (early stopping at 39%)
            filled = int(BAR_WIDTH * fraction)
            self.stream.write(f"\r{stage:<9} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
                              f"{fraction:4.0%} {message[:60]:<60}")
            self._open_line = fraction < 1.0
            if not self._open_line:
                self.stream.write("\n")
        elif stage != self._stage or fraction >= 1.0 or now - self._last > LOG_PROGRESS_EVERY_S:
            self.stream.write(f"{stage}: {fraction:.0%} {message}\n")
        else:
            return  # nothing written: the next line is due LOG_PROGRESS_EVERY_S after the last one
        self.stream.flush()
        self._last, self._stage = now, stage

    def done(self) -> None:
        if self.tty and self._open_line:
            self.stream.write("\n")
            self.stream.flush()
            self._open_line = False


def register(sub) -> None:
    model = sub.add_parser("model", help="train, import, check and export model versions",
                           description="Model registry: NAME@VERSION or NAME@latest names a version.")
    msub = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)

    p = msub.add_parser("train", help="train a new version from normal datasets")
    p.add_argument("--data", action="append", default=[], metavar="DATASET",
                   help="normal dataset id (repeat: one fleet model of several machines' datasets)")
    p.add_argument("--fault-data", action="append", default=[], metavar="DATASET",
                   help="fault dataset id, for ROC AUC / precision / recall in the model card (repeat)")
    p.add_argument("--name", required=True, help="model family, e.g. pump-3")
    p.add_argument("--epochs", type=int, help="maximum epochs (early stopping usually ends sooner)")
    p.add_argument("--hidden", help="hidden layer sizes, comma separated (default 32,16)")
    p.add_argument("--latent", type=int, help="bottleneck size (default 8)")
    p.add_argument("--percentile", type=float, help="threshold percentile of held-out normal scores (99.5)")
    p.add_argument("--margin", type=float, help="threshold = percentile score x margin (1.5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--parent", help="parent version (default: the family's latest)")
    p.add_argument("--notes", default="")
    per = p.add_argument_group("per-machine models (instead of --data)")
    per.add_argument("--per-device", action="store_true",
                     help="record each --device now and train one version per machine, named <name>-<device>")
    per.add_argument("--device", action="append", default=[], metavar="ID", help="with --per-device (repeat)")
    per.add_argument("--seconds", type=float, default=None, metavar="S", help="with --per-device: recording length "
                     "per machine (default 120)")
    per.add_argument("--deploy", action="store_true", help="with --per-device: deploy each version to its machine")
    per.add_argument("--trial", action="store_true", help="with --deploy: on trial (confirm or roll back later)")
    per.add_argument("--broker", help="with --per-device: broker URL (default: as other commands)")
    per.add_argument("--json", action="store_true", help="with --per-device: print the results as JSON")
    p.set_defaults(func=cmd_train)

    p = msub.add_parser("list", help="model versions")
    p.add_argument("--family")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = msub.add_parser("show", help="one version's model card")
    p.add_argument("ref", help="NAME@VERSION or NAME@latest")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

    p = msub.add_parser("check", help="fit table: image vs slot, arena vs RAM, ops, per profile")
    p.add_argument("ref", help="NAME@VERSION or NAME@latest")
    p.add_argument("--json", action="store_true")
    p.add_argument("--recompute", action="store_true", help="re-measure ops and arena with TFLM now")
    p.add_argument("--require", metavar="PROFILE", help="exit with an error unless it fits this profile")
    p.add_argument("--device", action="append", default=[], metavar="ID",
                   help="fit to machine: score the version on this device's recent normal windows (telemetry "
                   "history, else a short capture of its stream) and predict its false alarms (repeat)")
    p.add_argument("--broker", help="with --device: broker to capture from when a device has no history "
                   "(default: the running app's embedded broker)")
    p.add_argument("--capture", type=float, default=None, metavar="S",
                   help="with --device: seconds of stream to capture without history (0: history only)")
    p.set_defaults(func=cmd_check)

    p = msub.add_parser("import", help="import .tmlm, .tflite (int8), .keras, .h5 or a SavedModel dir")
    p.add_argument("file", type=Path)
    p.add_argument("--name", required=True)
    p.add_argument("--data", action="append", default=[], metavar="DATASET",
                   help="normal dataset for normalisation, int8 calibration and threshold")
    p.add_argument("--external", action="store_true",
                   help="store a model of another input shape as check-only (never deployed)")
    p.add_argument("--notes", default="")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_import)

    p = msub.add_parser("export", help="export a package (.tflite + .tmlm + manifest, with the float32 and "
                        "dynamic-range conversions the version keeps) or a C header")
    p.add_argument("ref", help="NAME@VERSION or NAME@latest")
    p.add_argument("--out", type=Path, default=Path("."), help="directory (default .)")
    p.add_argument("--header", action="store_true", help="also write a C header with the model bytes")
    p.add_argument("--header-content", choices=("image", "tflite"), default="image",
                   help="what the header holds: the TMLM image (default) or the bare flatbuffer")
    p.add_argument("--symbol", default="model", help="C array name (default model)")
    p.set_defaults(func=cmd_export)

    p = msub.add_parser("revoke", help="revoke a version: it is never deployed again (devices refuse it "
                        "once the revocation list reaches them)")
    p.add_argument("ref", help="NAME@VERSION")
    p.add_argument("--reason", default="")
    p.add_argument("--device", action="append", default=[], metavar="ID",
                   help="also send the signed revocation to this device now (repeat; MQTT)")
    p.add_argument("--broker", help="broker URL for --device (default: as other commands)")
    p.set_defaults(func=cmd_revoke)

    p = msub.add_parser("mlperf", help="build the MLPerf Tiny AD reference and store it (check-only)")
    p.add_argument("--name", default="mlperf-ad")
    p.set_defaults(func=cmd_mlperf)


def _registry():
    from app.ml.registry import Registry

    return Registry()


def cmd_revoke(args: argparse.Namespace) -> int:
    with _registry() as reg:
        mv = reg.revoke(args.ref, args.reason)
    print(f"revoked {mv.ref}")
    if args.device:
        from app.deploy.provision import revoke

        for device in args.device:
            print(f"{revoke(mv.name, mv.version, device, broker=args.broker)}: will refuse {mv.ref}")
    return 0


def _families() -> list[str]:
    with _registry() as reg:
        return reg.families()


def cmd_train(args: argparse.Namespace) -> int:
    import threading

    from app.ml import training, workflows

    overrides = {}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.hidden:
        try:
            overrides["hidden"] = tuple(int(v) for v in args.hidden.split(",") if v.strip())
        except ValueError:
            from app.domain.errors import DataError

            raise DataError(f"--hidden must be comma-separated integers, not {args.hidden!r}") from None
    if args.latent is not None:
        overrides["latent"] = args.latent
    if args.percentile is not None:
        overrides["threshold_percentile"] = args.percentile
    if args.margin is not None:
        overrides["threshold_margin"] = args.margin
    config = training.TrainConfig(seed=args.seed, **overrides)
    if args.per_device or args.device:
        from app.cli.adapt import train_per_device

        return train_per_device(args, config)
    if not args.data:
        from app.domain.errors import DataError

        raise DataError("give --data DATASET (repeat for several machines) or --per-device --device ID ...")
    progress = ProgressPrinter()
    mv = workflows.train_and_register(args.data, args.fault_data, args.name, config=config, parent=args.parent,
                                      notes=args.notes, progress=progress, cancel=threading.Event())
    progress.done()
    m = mv.metrics
    fits = [k for k, f in mv.fit.items() if f["fits"]]
    print(f"threshold {mv.threshold:.4f}, image {mv.image_size} B, arena {mv.arena} B, fits: {', '.join(fits)}"
          + (f", AUC {m['auc']:.3f}, precision {m['precision']:.2f}, recall {m['recall']:.2f}" if "auc" in m else ""),
          file=sys.stderr)
    for line in _rate_lines(m):
        print(f"  {line}", file=sys.stderr)
    for warning in mv.card.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    print(mv.ref)
    return 0


def _fmt_time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def cmd_list(args: argparse.Namespace) -> int:
    with _registry() as reg:
        versions = reg.list(args.family)
    if args.json:
        print(json.dumps([v.summary() for v in versions], indent=2))
        return 0
    if not versions:
        if args.family:
            print(f"no versions of {args.family!r} (families: {', '.join(_families()) or 'none'})")
        else:
            print("no models yet: `tinymlops model train --data DATASET --name NAME`")
        return 0
    print(f"{'model':<24} {'kind':<8} {'created':<16} {'image':>8} {'arena':>7} {'threshold':>9} {'AUC':>5}  fits")
    for v in versions:
        fits = ",".join(k for k, f in v.fit.items() if f["fits"]) or "none"
        auc = f"{v.metrics['auc']:.3f}" if "auc" in v.metrics else "-"
        thr = f"{v.threshold:.4f}" if v.threshold is not None else "-"
        print(f"{v.ref:<24} {v.kind:<8} {_fmt_time(v.created):<16} {v.image_size:>8} {v.arena:>7} {thr:>9} "
              f"{auc:>5}  {fits}")
    return 0


# The card's rates, each shown with its count and 95 % interval (app.ml.metrics.rate_fields).
CARD_RATES = ("false_alarm_rate", "false_alarm_rate_calibration", "precision", "recall")


def _rates_with_counts(card_metrics: dict) -> list[str]:
    return [r for r in CARD_RATES if f"{r}_count" in card_metrics]


def _rate_lines(card_metrics: dict) -> list[str]:
    """'false_alarm_rate 0/14 = 0.0 % (95 % CI 0.0-21.5 %)' per rate the card holds with its count."""
    from app.ml.metrics import describe_rate

    return [f"{r} {describe_rate(card_metrics, r)}" for r in _rates_with_counts(card_metrics)]


def cmd_show(args: argparse.Namespace) -> int:
    from app.ml.validation import format_table

    with _registry() as reg:
        mv = reg.resolve(args.ref)
        block = reg.signature(mv, sign_if_missing=False)
        revoked = reg.revoked(mv)
    signed_by = block.key_hex if block else None
    if args.json:
        print(json.dumps({**mv.summary(), "signed_by": signed_by, "revoked": revoked, "card": mv.card},
                         indent=2, default=float))
        return 0
    card = mv.card
    print(f"{mv.ref} ({mv.kind}{', deployable' if mv.deployable else ', check-only'})"
          + ("  REVOKED" if revoked else ""))
    if mv.deployable:
        print(f"  signed    {('by key ' + signed_by) if signed_by else 'not yet (signed when exported or deployed)'}")
    print(f"  created   {_fmt_time(mv.created)}   parent {mv.parent or '-'}   datasets {mv.dataset or '-'}")
    print(f"  sha256    {mv.sha256}")
    print(f"  sizes     image {mv.image_size} B, tflite {mv.tflite_size} B, arena {mv.arena} B, "
          f"ops {', '.join(mv.ops)}")
    if mv.threshold is not None:
        print(f"  threshold {mv.threshold:.5f}")
    if mv.metrics:
        rates = _rate_lines(mv.metrics)
        shown = _rates_with_counts(mv.metrics)
        plain = {k: v for k, v in mv.metrics.items() if not any(k.startswith(r) for r in shown)}
        print("  metrics   " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                         for k, v in plain.items()))
        for line in rates:
            print(f"            {line}")
    for warning in card.get("warnings", []):
        print(f"  warning   {warning}")
    conv = card.get("conversion", {})
    if conv.get("seconds"):
        sizes = ", ".join(f"{k} {v} B" for k, v in conv.get("sizes", {}).items())
        print("  convert   " + ", ".join(f"{k} {v:.2f} s" for k, v in conv["seconds"].items())
              + (f"; sizes {sizes}" if sizes else ""))
    if conv.get("int8_vs_float"):
        print("  int8/float " + ", ".join(f"{k} {v:.4f}" for k, v in conv["int8_vs_float"].items()))
    if mv.artifacts:
        print("  also kept " + ", ".join(f"{kind} {a['size']} B (sha256 {a['sha256'][:12]})"
                                         for kind, a in mv.artifacts.items()) + " (exported; a device runs int8)")
    if mv.notes:
        print(f"  notes     {mv.notes}")
    print(format_table(mv.fit))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from app.ml import validation

    if args.device:
        return _check_devices(args)
    with _registry() as reg:
        mv = reg.resolve(args.ref)
        fit, ops, arena = mv.fit, mv.ops, mv.arena
        if args.recompute:
            checked = validation.validate(reg.tflite_bytes(mv), mv.image_size)
            fit, ops, arena = checked.fit_dict(), checked.ops, checked.arena
    if args.json:
        print(json.dumps({"model": mv.ref, "kind": mv.kind, "deployable": mv.deployable, "ops": ops,
                          "arena": arena, "image_size": mv.image_size, "fit": fit}, indent=2))
    else:
        print(f"{mv.ref}: ops {', '.join(ops)}; minimum arena {arena} B (TFLM); image {mv.image_size} B"
              + ("" if mv.deployable else "; external model: check-only, not deployable"))
        print(validation.format_table(fit))
    if args.require:
        validation.require_fit(args.require, mv.image_size, arena, ops, label=mv.ref)
    return 0


def _check_devices(args: argparse.Namespace) -> int:
    """`model check REF --device ID...`: the fit-to-machine check; exit 1 when a device will false-alarm."""
    from app.deploy import fit_check
    from app.domain.errors import ModelError
    from app.protocol.image import ModelImage

    with _registry() as reg:
        mv = reg.resolve(args.ref)
        if not mv.deployable:
            raise ModelError(f"{mv.ref} is an external check-only model: it runs on no device to check against")
        image = ModelImage.from_bytes(reg.image_bytes(mv))
    capture = fit_check.CAPTURE_S if args.capture is None else args.capture
    if capture < 0:
        raise ModelError("--capture must be 0 or more seconds")

    def progress(device: str, text: str) -> None:
        if not args.json:
            print(f"{device}: {text}", file=sys.stderr)

    reports = fit_check.check_fleet(image, list(dict.fromkeys(args.device)), broker=args.broker,
                                    capture_s=capture, progress=progress)
    if args.json:
        print(json.dumps({"model": mv.ref, "threshold": image.threshold,
                          "devices": [r.to_dict() for r in reports]}, indent=2))
    else:
        print(f"{mv.ref} on its target machines (threshold {image.threshold:.4g}):")
        print(fit_check.format_table(reports))
    return 1 if any(r.verdict == fit_check.WILL_FALSE_ALARM for r in reports) else 0


def cmd_import(args: argparse.Namespace) -> int:
    from app.ml import workflows

    progress = ProgressPrinter()
    mv = workflows.import_and_register(args.file, args.name, data=args.data, external=args.external,
                                       notes=args.notes, progress=progress)
    progress.done()
    if args.json:
        print(json.dumps(mv.summary(), indent=2))
    else:
        print(mv.ref)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from app.ml import export

    if args.header:
        export.c_header(b"", args.symbol)  # a bad --symbol is refused before anything is written
    with _registry() as reg:
        mv = reg.resolve(args.ref)
        written = export.export_package(reg, mv, args.out)
        if args.header:
            written.append(export.export_header(reg, mv, args.out, content=args.header_content,
                                                symbol=args.symbol))
    for path in written:
        print(path)
    return 0


def cmd_mlperf(args: argparse.Namespace) -> int:
    from app.ml import mlperf

    progress = ProgressPrinter()
    with _registry() as reg:
        mv = mlperf.register_reference(reg, args.name, progress=progress)
    progress.done()
    print(mv.ref)
    return 0
