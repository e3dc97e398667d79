"""Start the BUNDLED application headless and fail unless it works: run after packaging/build.sh.

    python3 packaging/smoke_test.py                 # the bundle in build/packaging/dist/tinymlops
    python3 packaging/smoke_test.py --deb           # also dpkg -i the .deb, smoke-test the installed
                                                    # /usr/bin/tinymlops, dpkg -r it (needs root)

Checks, each against the frozen executable with QT_QPA_PLATFORM=offscreen and a throw-away data dir:
1. `tinymlops --version` prints the pyproject.toml version;
2. `tinymlops smoke-test`: embedded broker + virtual fleet come up, the devices appear in the fleet
   monitor, a small model trains, converts to int8 and loads in TFLM (one JSON line of results);
3. the GUI: `tinymlops gui --smoke-test` (main window on the embedded default, waits for the devices,
   prints a JSON line, exits 0);
4. `keys init`/`keys list` (Ed25519 signing key, passphrase-encrypted key file), `broker kit` (X.509
   CA and certificates) and `fleet ports` (pyserial), the libraries checks 2-3 never load;
Any non-zero exit, time-out, traceback or import error in the output fails the run. Prints a table of
the timings (time to first window / to devices) and exits 0 only when everything passed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from disk_space import MB, shortfall  # packaging/ is on sys.path: this file runs as a script

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "build" / "packaging"
PACKAGE = "tinymlops"
# A cold start of a 1 GB bundle plus TensorFlow's first import, training and conversion takes tens
# of seconds on a busy 2-core machine; more than this means it hangs.
SMOKE_TIMEOUT_S = 300
# `--version` must not import anything heavy.
VERSION_TIMEOUT_S = 60
# dpkg -i / -r of a 1 GB package on a slow disk.
DPKG_TIMEOUT_S = 600
# Text that means the bundle is broken even when the exit code says otherwise.
FAILURE_MARKERS = ("Traceback (most recent call last)", "ModuleNotFoundError", "ImportError",
                   "Failed to execute script", "[PYI-", "Segmentation fault", "core dumped",
                   "qt.qpa.plugin: Could not load")
# What the .deb must put on the system (and take away again).
DEB_FILES = ("/usr/bin/tinymlops", "/opt/tinymlops/tinymlops", "/usr/share/applications/tinymlops.desktop",
             "/usr/share/icons/hicolor/scalable/apps/tinymlops.svg",
             "/usr/share/icons/hicolor/48x48/apps/tinymlops.png",
             "/usr/share/metainfo/io.github.tinymlops.operator.metainfo.xml")


# dpkg unpacks every file beside its final name before renaming it, so it needs the Installed-Size
# free under /opt, plus room for its database and the launcher's first-run files.
DPKG_MARGIN_MB = 100


class SmokeFailure(Exception):
    pass


@dataclass
class Report:
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # check, result, detail
    failed: bool = False

    def add(self, check: str, ok: bool, detail: str) -> None:
        self.rows.append((check, "ok" if ok else "FAIL", detail))
        self.failed |= not ok

    def skip(self, check: str, reason: str) -> None:
        """A check this machine cannot run (not a failure of the package): shown as SKIP with why."""
        self.rows.append((check, "SKIP", reason))

    def print(self) -> None:
        width = max(len(r[0]) for r in self.rows)
        for check, result, detail in self.rows:
            print(f"{check:<{width}}  {result:<4}  {detail}")


def project_version() -> str:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["project"]["version"]


def run(cmd: list[str], env: dict, timeout: float) -> tuple[int, str, str, float]:
    """Run a command; returns (exit code, stdout, stderr, seconds). Raises SmokeFailure on time-out."""
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise SmokeFailure(f"{' '.join(cmd)} did not finish within {timeout:.0f} s") from exc
    return proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - started


def check_output(what: str, code: int, out: str, err: str) -> None:
    for marker in FAILURE_MARKERS:
        if marker in out or marker in err:
            raise SmokeFailure(f"{what}: '{marker}' in the output:\n{err[-4000:] or out[-4000:]}")
    if code != 0:
        raise SmokeFailure(f"{what}: exit code {code}\nstdout: {out[-2000:]}\nstderr: {err[-4000:]}")


def last_json_line(what: str, out: str) -> dict:
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise SmokeFailure(f"{what}: no JSON result line in its output:\n{out[-2000:]}")


def smoke_env(data_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "QT_PLUGIN"))}
    env.update(QT_QPA_PLATFORM="offscreen", TINYMLOPS_DATA_DIR=str(data_dir), TF_CPP_MIN_LOG_LEVEL="2",
               HOME=str(data_dir))  # no user config leaks in, nothing is left in the real home
    return env


def _attempt(report: Report, check: str, step) -> None:
    """Run one check; a failure is recorded and the remaining checks still run."""
    try:
        step()
    except SmokeFailure as exc:
        report.add(check, False, str(exc))


def check_executable(exe: str, report: Report, devices: int, label: str) -> None:
    """The four checks against one executable (the bundle, or the installed /usr/bin/tinymlops)."""
    with tempfile.TemporaryDirectory(prefix="tinymlops-smoke-") as tmp:
        env = smoke_env(Path(tmp))

        def version() -> None:
            want = f"tinymlops {project_version()}"
            code, out, err, secs = run([exe, "--version"], env, VERSION_TIMEOUT_S)
            check_output(f"{label} --version", code, out, err)
            report.add(f"{label}: --version", out.strip() == want,
                       f"{out.strip()!r} in {secs:.1f} s (want {want!r})")

        def smoke_test() -> None:
            code, out, err, secs = run([exe, "smoke-test", "--devices", str(devices)], env, SMOKE_TIMEOUT_S)
            check_output(f"{label} smoke-test", code, out, err)
            result = last_json_line(f"{label} smoke-test", out)
            model = result.get("model", {})
            ok = (result.get("ok") is True and len(result.get("devices", [])) >= devices
                  and model.get("arena", 0) > 0 and bool(result.get("tensorflow")) and result.get("frozen") is True)
            s = result.get("seconds", {})
            report.add(f"{label}: smoke-test", ok,
                       f"{len(result.get('devices', []))} devices after {s.get('devices', float('nan')):.1f} s, "
                       f"model trained+converted in {s.get('convert', float('nan')):.1f} s "
                       f"(TF {result.get('tensorflow')}, int8 {model.get('tflite_size')} B, arena "
                       f"{model.get('arena')} B), process {secs:.1f} s, frozen={result.get('frozen')}")

        def gui() -> None:
            code, out, err, secs = run([exe, "gui", "--smoke-test"], env, SMOKE_TIMEOUT_S)
            check_output(f"{label} gui --smoke-test", code, out, err)
            result = last_json_line(f"{label} gui --smoke-test", out)
            s = result.get("seconds", {})
            shown = result.get("devices", 0)
            training = result.get("training", {})
            report.add(f"{label}: GUI", result.get("ok") is True and shown >= 1 and training.get("ok") is True,
                       f"first window after {s.get('window')} s, {shown} devices in the fleet view after "
                       f"{s.get('devices')} s, a model trained in the GUI's worker process in "
                       f"{s.get('training')} s, TensorFlow imported at start-up: "
                       f"{result.get('tensorflow_imported')}, process {secs:.1f} s")

        def features() -> None:
            # The libraries the smoke tests above never load: cryptography (Ed25519 signing key, X.509
            # broker kit), the key store (OS keyring, else a passphrase-encrypted file), pyserial's ports.
            # A data dir of its own: `smoke-test` above has already made a signing key in the shared one.
            data = Path(tmp) / "features"
            data.mkdir()
            feature_env = dict(env, TINYMLOPS_DATA_DIR=str(data), HOME=str(data), TINYMLOPS_KEY_PASSPHRASE="smoke-test")
            kit = data / "kit"
            steps = (("keys init", [exe, "keys", "init"]),
                     ("keys list", [exe, "keys", "list"]),
                     ("broker kit", [exe, "broker", "kit", "--site", "smoke", "--devices", "d1", "--out", str(kit)]),
                     ("fleet ports", [exe, "fleet", "ports"]))
            took = []
            for what, cmd in steps:
                code, out, err, secs = run(cmd, feature_env, SMOKE_TIMEOUT_S)
                check_output(f"{label} {what}", code, out, err)
                took.append(f"{what} {secs:.1f} s")
            certs = sorted(p.name for p in kit.rglob("*.crt"))
            want = ["broker.crt", "ca.crt", "d1.crt", "operator.crt"]  # CA, broker, one device, one operator
            report.add(f"{label}: keys, broker kit, serial", certs == want,
                       f"{', '.join(took)}; certificates {certs}")

        _attempt(report, f"{label}: --version", version)
        _attempt(report, f"{label}: smoke-test", smoke_test)
        _attempt(report, f"{label}: GUI", gui)
        _attempt(report, f"{label}: keys, broker kit, serial", features)


def installed_size_kib(deb: Path) -> int:
    """The package's Installed-Size control field (KiB, as Debian policy has it)."""
    code, out, err, _ = run(["dpkg-deb", "-f", str(deb), "Installed-Size"], dict(os.environ), DPKG_TIMEOUT_S)
    if code != 0 or not out.strip().isdigit():
        raise SmokeFailure(f"dpkg-deb -f {deb} Installed-Size failed ({code}): {err.strip() or out.strip()}")
    return int(out)


def install_deb(deb: Path, report: Report, devices: int) -> None:
    if os.geteuid() != 0:
        raise SmokeFailure("--deb installs the package system-wide: run as root")
    if shutil.which("tinymlops") and not Path("/var/lib/dpkg/info/tinymlops.list").exists():
        raise SmokeFailure("a tinymlops that is not the Debian package is on PATH; it would shadow the installed one")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    need_mb = installed_size_kib(deb) // 1024 + DPKG_MARGIN_MB
    short = shortfall(Path("/opt"), need_mb * MB, "installing the .deb")
    if short is not None:
        report.skip("deb: dpkg -i", short)
        return
    code, out, err, secs = run(["dpkg", "-i", str(deb)], env, DPKG_TIMEOUT_S)
    if code != 0:
        raise SmokeFailure(f"dpkg -i {deb} failed ({code}):\n{out}\n{err}")
    report.add("deb: dpkg -i", True, f"{deb.name} in {secs:.1f} s")
    try:
        missing = [p for p in DEB_FILES if not Path(p).exists()]
        report.add("deb: files installed", not missing, f"missing: {missing}" if missing else f"{len(DEB_FILES)} paths")
        check_executable("/usr/bin/tinymlops", report, devices, "installed")
    finally:
        code, out, err, secs = run(["dpkg", "-r", PACKAGE], env, DPKG_TIMEOUT_S)
        left = [p for p in (*DEB_FILES, "/opt/tinymlops") if Path(p).exists()]
        report.add("deb: dpkg -r", code == 0 and not left,
                   f"removed in {secs:.1f} s" if code == 0 and not left else f"exit {code}, left behind: {left} {err}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=DEFAULT_OUT / "dist" / "tinymlops" / "tinymlops",
                        help="the frozen executable (default: build/packaging/dist/tinymlops/tinymlops)")
    parser.add_argument("--deb", nargs="?", const=DEFAULT_OUT / f"tinymlops_{project_version()}_amd64.deb",
                        type=Path, default=None, help="also install, smoke-test and remove this .deb (root)")
    parser.add_argument("--devices", type=int, default=3, help="virtual devices to wait for")
    args = parser.parse_args(argv)

    report = Report()
    try:
        if not args.bundle.is_file():
            raise SmokeFailure(f"no bundle at {args.bundle}: run packaging/build.sh first")
        check_executable(str(args.bundle), report, args.devices, "bundle")
        if args.deb is not None:
            if not args.deb.is_file():
                raise SmokeFailure(f"no package at {args.deb}: run packaging/build.sh first")
            install_deb(args.deb, report, args.devices)
    except SmokeFailure as exc:
        report.add("smoke test", False, str(exc))
    report.print()
    print("SMOKE TEST " + ("FAILED" if report.failed else "PASSED"))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
