"""The maintenance-round report (`tinymlops report`): every machine of a site with its ISO zone,
the alarms with their diagnosis and evidence, and the spectra that show it, from the datasets
recorded in the period and/or a few seconds streamed from the fleet now (app.analysis.live_round).
HTML with inline SVG plots (opens anywhere, nothing to install); PDF
through matplotlib when it is installed (optional extra `report`)."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from app.analysis import iso, svgplot
from app.analysis.diagnosis import Analysis
from app.analysis.machines import Machine, MachineStore
from app.analysis.runner import analyze_recording
from app.domain.errors import DataError
from app.ml import store as db
from app.ml.datasets import Dataset, DatasetStore

log = logging.getLogger(__name__)

_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# Defect marker colours in the plots.
MARKER_COLOURS = {"BPFO": "#c0392b", "BPFI": "#8e44ad", "BSF": "#16a085", "FTF": "#7f8c8d"}
# The envelope plot shows up to this multiple of the highest marked defect frequency.
ENVELOPE_PLOT_MARGIN = 1.15
# The order spectrum is plotted up to this shaft order (looseness harmonics reach 10x).
ORDER_PLOT_MAX = 12.0
ALARM_ZONES = ("C", "D")
# PDF pages are A4 portrait, inches.
A4_INCHES = (8.27, 11.69)


def parse_since(text: str) -> float:
    """Seconds in "7d", "12h", "30m", "2w"."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*", text)
    if not match:
        raise DataError(f"--since {text!r}: use a number and a unit, e.g. 30m, 12h, 7d, 2w")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass
class MachineEntry:
    """One device's machine in the report: its latest analysed recording, or why it has none."""

    device_id: str
    location: str
    machine: Machine | None
    recorded: float  # when the analysed recording was made
    source: str  # its dataset id, or "live stream"
    recordings: int
    analysis: Analysis | None = None
    problem: str = ""
    trend: list[tuple[float, float]] = field(default_factory=list)  # (created, velocity mm/s)
    anomaly_alarm: bool = False  # the device's own model alarms (live rounds)

    @property
    def alarm(self) -> bool:
        a = self.analysis
        return self.anomaly_alarm or (a is not None and (a.zone.zone in ALARM_ZONES or a.fault != "healthy"))


def _site_of(location: str) -> str:
    return location.split("/", 1)[0] if location else ""


def collect(site: str | None, since_s: float, db_path: Path | None = None, now: float | None = None
            ) -> list[MachineEntry]:
    """Every device with a recording in the period (on `site`, when given), its latest recording
    analysed with its machine description; older ones give the velocity trend."""
    now = time.time() if now is None else now
    start = now - since_s
    with DatasetStore(db_path) as datasets, MachineStore(db_path) as machines:
        by_device: dict[str, list[Dataset]] = {}
        for ds in datasets.list():
            meta = ds.meta or {}
            device = meta.get("device")
            if not device or ds.created < start:
                continue
            if site and _site_of(meta.get("location", "")) != site:
                continue
            by_device.setdefault(device, []).append(ds)
        entries = []
        for device, items in sorted(by_device.items()):
            items.sort(key=lambda d: d.created)
            latest = items[-1]
            entry = MachineEntry(device, (latest.meta or {}).get("location", ""), machines.find(device),
                                 latest.created, latest.id, len(items))
            for ds in items:
                try:
                    a = analyze_recording(datasets.samples(ds), ds.sample_rate, entry.machine,
                                          recorded_shaft_hz=(ds.meta or {}).get("shaft_hz"))
                except DataError as exc:
                    if ds is latest:
                        entry.problem = str(exc)
                    continue
                entry.trend.append((ds.created, a.velocity_overall_mm_s))
                if ds is latest:
                    entry.analysis = a
            entries.append(entry)
    return entries


def analyse_live(recordings: list, db_path: Path | None = None) -> list[MachineEntry]:
    """Entries for recordings streamed now (app.analysis.live_round.LiveRecording)."""
    entries = []
    with MachineStore(db_path) as machines:
        for r in recordings:
            entry = MachineEntry(r.device_id, r.location, machines.find(r.device_id), r.recorded, "live stream", 1,
                                 problem=r.problem, anomaly_alarm=r.anomaly_alarm)
            if r.samples is not None:
                try:
                    entry.analysis = analyze_recording(r.samples, r.sample_rate, entry.machine,
                                                       recorded_shaft_hz=r.shaft_hz)
                    entry.trend.append((r.recorded, entry.analysis.velocity_overall_mm_s))
                except DataError as exc:
                    entry.problem = str(exc)
            entries.append(entry)
    return entries


def merge(recorded: list[MachineEntry], live: list[MachineEntry]) -> list[MachineEntry]:
    """Live entries win for their devices, with the recorded trend before their own point."""
    by_device = {e.device_id: e for e in recorded}
    for e in live:
        old = by_device.get(e.device_id)
        if old is not None:
            e.trend = old.trend + e.trend
            e.recordings += old.recordings
        by_device[e.device_id] = e
    return [by_device[d] for d in sorted(by_device)]


def _envelope_svg(a: Analysis) -> str:
    top = max(m.expected_hz for m in a.defect_markers) * ENVELOPE_PLOT_MARGIN
    markers = [(m.expected_hz, m.name, MARKER_COLOURS[m.name.split("x")[-1]]) for m in a.defect_markers
               if m.name.split("x")[-1] in MARKER_COLOURS]
    return svgplot.line_plot(a.envelope_freqs, a.envelope_amplitude, top, markers, "envelope spectrum, Hz "
                             f"(band {a.envelope_band_hz[0]:.0f}-{a.envelope_band_hz[1]:.0f} Hz)", "g")


def _order_svg(a: Analysis) -> str:
    orders = a.spectrum_freqs / a.shaft_hz
    markers = [(float(k), f"{k}x", "#555") for k in (1, 2, 3)]
    return svgplot.line_plot(orders, a.spectrum_amplitude, ORDER_PLOT_MAX, markers,
                             f"shaft orders (1x = {a.shaft_hz:.2f} Hz)", "g, radial")


def _zone_cell(a: Analysis | None) -> str:
    if a is None:
        return "<td>-</td>"
    return (f'<td style="background:{a.zone.colour};font-weight:bold;text-align:center" '
            f'title="{escape(a.zone.meaning)}">{a.zone.zone}</td>')


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def render_html(entries: list[MachineEntry], site: str | None, since_text: str, now: float | None = None) -> str:
    now = time.time() if now is None else now
    title = f"Maintenance round: {site or 'all sites'}, last {since_text}"
    counts = {z: sum(1 for e in entries if e.analysis and e.analysis.zone.zone == z) for z in iso.ZONES}
    alarms = [e for e in entries if e.alarm]
    out = ["<!DOCTYPE html><html><head><meta charset='utf-8'>", f"<title>{escape(title)}</title>",
           "<style>body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse}"
           "td,th{border:1px solid #bbb;padding:3px 8px;font-size:13px}th{background:#eee}"
           ".ev{margin:2px 0 2px 16px;font-size:13px}h3{margin-bottom:4px}</style></head><body>",
           f"<h1>{escape(title)}</h1>",
           f"<p>Generated {_when(now)}. {len(entries)} machines recorded in the period; zones "
           + ", ".join(f"{z}: {counts[z]}" for z in iso.ZONES)
           + f"; {len(alarms)} alarm(s). Overall velocity RMS 10-1000 Hz, highest axis; zones per ISO "
           "10816-1 / 20816-3 for each machine's class.</p>",
           "<h2>Machines</h2><table><tr><th>device</th><th>location</th><th>machine</th><th>recorded</th>"
           "<th>velocity mm/s</th><th>zone</th><th>class</th><th>diagnosis</th><th>trend mm/s</th></tr>"]
    for e in entries:
        a = e.analysis
        name = escape(e.machine.name) if e.machine and e.machine.name else ""
        trend = " &rarr; ".join(f"{v:.2f}" for _, v in e.trend[-5:])
        diag = escape(a.fault) if a else f"<i>not analysed: {escape(e.problem)}</i>"
        out.append(f"<tr><td>{escape(e.device_id)}</td><td>{escape(e.location)}</td><td>{name}</td>"
                   f"<td>{_when(e.recorded)}</td><td>{f'{a.velocity_overall_mm_s:.2f}' if a else '-'}</td>"
                   f"{_zone_cell(a)}<td>{escape(a.zone.machine_class) if a else '-'}</td><td>{diag}</td>"
                   f"<td>{trend}</td></tr>")
    out.append("</table>")
    out.append("<h2>Alarms</h2>" if alarms else "<h2>Alarms</h2><p>None: every analysed machine is in zone A "
               "or B with no fault pattern.</p>")
    for e in alarms:
        a = e.analysis
        if a is None:  # the device's model alarms, but its vibration could not be analysed
            out.append(f"<h3>{escape(e.device_id)} ({escape(e.location)}): anomaly alarm</h3>"
                       f"<div class='ev'>not analysed: {escape(e.problem)}</div>")
            continue
        out.append(f"<h3>{escape(e.device_id)} ({escape(e.location)}): {escape(a.fault)}, zone {a.zone.zone}, "
                   f"{a.velocity_overall_mm_s:.2f} mm/s</h3>")
        out.append(f"<div class='ev'>{escape(e.source)}, {a.seconds:.1f} s; shaft {a.shaft_hz:.2f} Hz "
                   f"({a.shaft_hz * 60:.0f} rpm, nominal {a.shaft_nominal_hz:g} Hz)"
                   + (f"; also: {escape(', '.join(a.also))}" if a.also else "") + "</div>")
        if e.anomaly_alarm:
            out.append("<div class='ev'>&bull; the device's anomaly model alarms</div>")
        out.extend(f"<div class='ev'>&bull; {escape(line)}</div>" for line in a.evidence)
        out.append(_order_svg(a))
        out.append(_envelope_svg(a))
    unanalysed = [e for e in entries if e.analysis is None]
    if unanalysed:
        out.append("<h2>Not analysed</h2><ul>")
        out.extend(f"<li>{escape(e.device_id)}: {escape(e.problem)}</li>" for e in unanalysed)
        out.append("</ul>")
    out.append("</body></html>")
    return "\n".join(out)


def write_pdf(entries: list[MachineEntry], site: str | None, since_text: str, path: Path) -> None:
    """The same report as a PDF, through matplotlib's PdfPages (optional dependency)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.backends.backend_pdf import PdfPages
        from matplotlib.figure import Figure
    except ImportError:
        raise DataError("a PDF report needs matplotlib (pip install 'tinymlops[report]'); "
                        "or write HTML: --out FILE.html") from None
    title = f"Maintenance round: {site or 'all sites'}, last {since_text}"
    tmp = path.with_name(f".tmp-{path.name}")
    with PdfPages(tmp) as pdf:
        fig = Figure(figsize=A4_INCHES)
        fig.text(0.06, 0.96, title, fontsize=14, weight="bold")
        y = 0.92
        for e in entries:
            a = e.analysis
            status = (f"{a.velocity_overall_mm_s:6.2f} mm/s  zone {a.zone.zone}  {a.fault}" if a
                      else f"not analysed: {e.problem[:60]}")
            text = f"{e.device_id:<10} {e.location:<28} {status}"
            colour = a.zone.colour if a else "#999"
            fig.text(0.06, y, text, fontsize=8, family="monospace", color="black",
                     bbox={"facecolor": colour, "alpha": 0.35, "edgecolor": "none"})
            y -= 0.022
            if y < 0.05:
                pdf.savefig(fig)
                fig, y = Figure(figsize=A4_INCHES), 0.95
        pdf.savefig(fig)
        for e in (e for e in entries if e.alarm and e.analysis is not None):
            a = e.analysis
            fig = Figure(figsize=A4_INCHES)
            fig.text(0.06, 0.96, f"{e.device_id} ({e.location}): {a.fault}, zone {a.zone.zone}, "
                     f"{a.velocity_overall_mm_s:.2f} mm/s", fontsize=11, weight="bold")
            for i, line in enumerate(a.evidence[:6]):
                fig.text(0.06, 0.93 - 0.018 * i, "- " + line, fontsize=7.5)
            ax1 = fig.add_axes((0.1, 0.45, 0.85, 0.3))
            ax1.plot(a.spectrum_freqs / a.shaft_hz, a.spectrum_amplitude, lw=0.6)
            ax1.set_xlim(0, ORDER_PLOT_MAX)
            ax1.set_xlabel(f"shaft orders (1x = {a.shaft_hz:.2f} Hz)")
            ax1.set_ylabel("g, radial")
            ax2 = fig.add_axes((0.1, 0.07, 0.85, 0.3))
            top = max(m.expected_hz for m in a.defect_markers) * ENVELOPE_PLOT_MARGIN
            keep = a.envelope_freqs <= top
            ax2.plot(a.envelope_freqs[keep], a.envelope_amplitude[keep], lw=0.6)
            for m in a.defect_markers:
                kind = m.name.split("x")[-1]
                if kind in MARKER_COLOURS:
                    ax2.axvline(m.expected_hz, color=MARKER_COLOURS[kind], ls="--", lw=0.6)
                    ax2.text(m.expected_hz, ax2.get_ylim()[1] * 0.95, m.name, fontsize=6, color=MARKER_COLOURS[kind])
            ax2.set_xlabel("envelope spectrum, Hz")
            ax2.set_ylabel("g")
            pdf.savefig(fig)
    tmp.replace(path)


def write(entries: list[MachineEntry], site: str | None, since_text: str, path: Path) -> None:
    """HTML or PDF by the file's suffix; written atomically."""
    suffix = path.suffix.lower()
    if suffix in (".html", ".htm"):
        db.write_atomic(path, render_html(entries, site, since_text).encode("utf-8"))
    elif suffix == ".pdf":
        write_pdf(entries, site, since_text, path)
    else:
        raise DataError(f"{path.name}: the report is written as .html or .pdf")
