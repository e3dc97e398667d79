"""Render resources/icons/tinymlops.svg to the PNG sizes desktops and installers ask for, plus the
Windows .ico and macOS .icns (PNG-compressed entries, which both formats accept).

Uses Qt's own SVG renderer (PySide6 QtSvg, already a dependency), so it needs no extra tool:
    QT_QPA_PLATFORM=offscreen python3 packaging/render_icons.py
The outputs are committed; run this again after editing the SVG.
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SVG = ROOT / "resources" / "icons" / "tinymlops.svg"
# The hicolor theme sizes Debian menus, docks and window decorations look up; 256 also feeds the
# Windows .ico and 512 the macOS .icns.
SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
ICO = ROOT / "packaging" / "windows" / "tinymlops.ico"
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)  # 256 is the largest an .ico entry can describe
ICNS = ROOT / "packaging" / "macos" / "tinymlops.icns"
# ICNS element types holding PNG data, by pixel size (Apple's "icp4".."ic09").
ICNS_TYPES = {16: b"icp4", 32: b"icp5", 64: b"icp6", 128: b"ic07", 256: b"ic08", 512: b"ic09"}


def png_path(size: int, icons_dir: Path = SVG.parent) -> Path:
    return icons_dir / f"tinymlops-{size}.png"


def render(svg: Path = SVG, sizes: tuple[int, ...] = SIZES, out_dir: Path | None = None) -> list[Path]:
    """Write one transparent PNG per size next to the SVG (or into out_dir)."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # noqa: F841 (fonts/painting need it)
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"render_icons: {svg} is not a valid SVG")
    written = []
    for size in sizes:
        image = QImage(size, size, QImage.Format.Format_ARGB32)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        renderer.render(painter)
        painter.end()
        path = png_path(size, out_dir or svg.parent)
        if not image.save(str(path), "PNG"):
            raise SystemExit(f"render_icons: cannot write {path}")
        written.append(path)
    return written


def write_ico(pngs: dict[int, bytes], path: Path) -> None:
    """ICONDIR + one ICONDIRENTRY per size, each image stored as PNG (Windows Vista and later)."""
    sizes = [size for size in ICO_SIZES if size in pngs]
    offset = 6 + 16 * len(sizes)
    header = struct.pack("<HHH", 0, 1, len(sizes))
    entries, blobs = b"", b""
    for size in sizes:
        data = pngs[size]
        dim = 0 if size == 256 else size  # 0 means 256 in an ICONDIRENTRY
        entries += struct.pack("<BBBBHHII", dim, dim, 0, 0, 1, 32, len(data), offset + len(blobs))
        blobs += data
    path.write_bytes(header + entries + blobs)


def write_icns(pngs: dict[int, bytes], path: Path) -> None:
    """'icns' + length, then one (type, length, PNG) element per size."""
    body = b"".join(kind + struct.pack(">I", 8 + len(pngs[size])) + pngs[size]
                    for size, kind in ICNS_TYPES.items() if size in pngs)
    path.write_bytes(b"icns" + struct.pack(">I", 8 + len(body)) + body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="directory for the PNGs (default: next to the SVG)")
    args = parser.parse_args()
    written = render(out_dir=args.out)
    pngs = {size: path.read_bytes() for size, path in zip(SIZES, written, strict=True)}
    write_ico(pngs, ICO)
    write_icns(pngs, ICNS)
    for path in (*written, ICO, ICNS):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
