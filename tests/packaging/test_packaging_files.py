"""The installer inputs agree with pyproject.toml and pass the validators desktops and software
centres use: a wrong Exec=, icon name or version would only show up on a user's laptop."""

from __future__ import annotations

import configparser
import shutil
import struct
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.packaging.helpers import packaging_script

ROOT = Path(__file__).resolve().parents[2]
PACKAGING = ROOT / "packaging"
DESKTOP = ROOT / "resources" / "desktop" / "tinymlops.desktop"
METAINFO = ROOT / "resources" / "desktop" / "io.github.tinymlops.operator.metainfo.xml"
ICONS = ROOT / "resources" / "icons"
ICON_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
VALIDATOR_HINT = "install Debian packages desktop-file-utils and appstream (scripts/bootstrap.sh)"


@pytest.fixture(scope="module")
def project() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["project"]


def _desktop() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read(DESKTOP, encoding="utf-8")
    return parser["Desktop Entry"]


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} not found: {VALIDATOR_HINT}"
    return path


def test_desktop_entry_passes_desktop_file_validate():
    proc = subprocess.run([_tool("desktop-file-validate"), str(DESKTOP)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_metainfo_passes_appstreamcli_validate():
    proc = subprocess.run([_tool("appstreamcli"), "validate", "--no-net", str(METAINFO)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_desktop_entry_starts_the_console_script_with_the_app_icon(project):
    entry = _desktop()
    script = next(iter(project["scripts"]))
    # no %U/%F field code: a file dropped on the launcher would reach argparse as an unknown command
    assert entry["Exec"] == script
    assert entry["TryExec"] == script
    assert entry["Icon"] == "tinymlops"
    assert (ICONS / "tinymlops.svg").is_file()


def test_metainfo_matches_desktop_file_console_script_and_version(project):
    root = ET.parse(METAINFO).getroot()
    assert root.get("type") == "desktop-application"
    assert root.findtext("launchable[@type='desktop-id']") == DESKTOP.name
    assert root.findtext("provides/binary") == next(iter(project["scripts"]))
    newest = root.find("releases/release")
    assert newest is not None and newest.get("version") == project["version"], \
        "add a <release> for the pyproject.toml version at the top of <releases>"
    assert root.findtext("project_license") == project["license"]


def test_png_icons_exist_at_every_size_with_those_dimensions():
    for size in ICON_SIZES:
        assert _png_size(ICONS / f"tinymlops-{size}.png") == (size, size)


def test_icon_renderer_writes_every_size(tmp_path, qapp):
    # `qapp`: the process's one Qt application must be a QApplication (widget tests run later in
    # the same process); render_icons would otherwise create a bare QGuiApplication.
    render_icons = packaging_script("render_icons")
    written = render_icons.render(out_dir=tmp_path)
    assert [_png_size(p) for p in written] == [(s, s) for s in render_icons.SIZES]
    assert tuple(render_icons.SIZES) == ICON_SIZES
    pngs = {size: path.read_bytes() for size, path in zip(render_icons.SIZES, written, strict=True)}
    render_icons.write_ico(pngs, tmp_path / "t.ico")
    render_icons.write_icns(pngs, tmp_path / "t.icns")

    from PySide6.QtGui import QImageReader

    # Qt's own ico/icns readers accept every entry: Windows and macOS will too.
    ico = QImageReader(str(tmp_path / "t.ico"))
    assert ico.imageCount() == len(render_icons.ICO_SIZES)
    assert ico.read().width() == 16
    icns = QImageReader(str(tmp_path / "t.icns"))
    assert icns.imageCount() == len(render_icons.ICNS_TYPES)
    assert not icns.read().isNull()


def test_committed_ico_and_icns_hold_the_committed_pngs(tmp_path):
    """The installers' icons are built from the PNGs; a mismatch means render_icons.py was not rerun."""
    render_icons = packaging_script("render_icons")
    pngs = {size: (ICONS / f"tinymlops-{size}.png").read_bytes() for size in ICON_SIZES}
    render_icons.write_ico(pngs, tmp_path / "t.ico")
    render_icons.write_icns(pngs, tmp_path / "t.icns")
    assert (tmp_path / "t.ico").read_bytes() == render_icons.ICO.read_bytes()
    assert (tmp_path / "t.icns").read_bytes() == render_icons.ICNS.read_bytes()


def test_spec_is_valid_python_and_bundles_the_entry_point_resources_and_metadata(project):
    spec = (PACKAGING / "tinymlops.spec").read_text()
    compile(spec, "tinymlops.spec", "exec")
    assert f'DIST_NAME = "{project["name"]}"' in spec  # copy_metadata -> app.__version__ in the bundle
    assert 'copy_metadata("amqtt")' in spec or 'collect_all(\n    "amqtt"' in spec
    assert '"resources"), "resources")' in spec
    launcher = (PACKAGING / "launcher.py").read_text()
    module, func = project["scripts"]["tinymlops"].split(":")
    assert f"from {module} import {func}" in launcher


def test_debian_control_template_and_launcher():
    control = (PACKAGING / "debian" / "control.in").read_text()
    fields = dict(line.split(": ", 1) for line in control.splitlines() if line and not line.startswith(" "))
    assert fields["Package"] == "tinymlops"
    assert fields["Version"] == "@VERSION@"
    assert fields["Architecture"] == "amd64"
    assert fields["Depends"] == "@DEPENDS@"
    wrapper = (PACKAGING / "debian" / "tinymlops.sh").read_text()
    assert 'exec /opt/tinymlops/tinymlops "$@"' in wrapper
    build = (PACKAGING / "build.sh").read_text()
    for needed in ("libegl1", "libxkbcommon0", "libfontconfig1", "libdbus-1-3", "libxcb-cursor0", "--root-owner-group"):
        assert needed in build


def test_windows_and_macos_configs_take_the_version_from_the_build(project):
    iss = (PACKAGING / "windows" / "tinymlops.iss").read_text()
    assert "#ifndef AppVersion" in iss and "{#AppVersion}" in iss
    assert "dist\\tinymlops\\*" in iss
    mac = (PACKAGING / "macos" / "tinymlops-macos.spec").read_text()
    compile(mac, "tinymlops-macos.spec", "exec")
    assert "BUNDLE(" in mac and "CFBundleShortVersionString" in mac


def test_version_flag_prints_the_pyproject_version(project):
    proc = subprocess.run([sys.executable, "-m", "app", "--version"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"tinymlops {project['version']}"


def test_elf_requirements_reads_the_glibc_and_libstdcxx_versions_qt_needs():
    elf_requirements = packaging_script("elf_requirements")
    import PySide6

    qtcore = next((Path(PySide6.__file__).parent / "Qt" / "lib").glob("libQt6Core.so*"))
    assert elf_requirements.is_elf(qtcore)
    assert not elf_requirements.is_elf(DESKTOP)
    (major, minor), patch = elf_requirements.needed_versions([qtcore])
    assert (major, minor) >= (2, 28)  # Qt 6 wheels are manylinux_2_28
    assert patch >= 25  # built with GCC >= 8
    assert patch in elf_requirements.GLIBCXX_TO_GCC
