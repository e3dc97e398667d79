#!/usr/bin/env bash
# Build the Linux x86-64 one-folder bundle (PyInstaller) and the Debian package of it.
#
#   packaging/build.sh            -> build/packaging/dist/tinymlops/        (the bundle)
#                                    build/packaging/tinymlops_VERSION_amd64.deb
#   python3 packaging/smoke_test.py   (then: start the bundle headless and check it works)
#
# Env: PYTHON (interpreter for the build venv, default python3), TINYMLOPS_PACKAGING_OUT (output dir,
# default build/packaging), DEB_COMPRESSION (dpkg-deb -Z: zstd (default: seconds), xz (28% smaller, 4 min).
# Needs: python3-venv, dpkg-deb (dpkg), readelf and strip (binutils), and PyPI access for the first run.
# Exit status: 0 built, 3 not enough disk space (disk_space.py says how much), anything else failed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${TINYMLOPS_PACKAGING_OUT:-$ROOT/build/packaging}"
PY="${PYTHON:-python3}"
VENV="$OUT/venv"
DIST="$OUT/dist"
APP=tinymlops
PKG=tinymlops
METAINFO_ID=io.github.tinymlops.operator
# Qt's xcb platform plugin and EGL/GL/fontconfig come from the system (the libraries its ELF files
# need, from readelf); libc6 and libstdc++6 bounds are computed from the bundle (elf_requirements.py).
QT_DEPENDS="libegl1, libgl1, libfontconfig1, libfreetype6, libdbus-1-3, libglib2.0-0t64 | libglib2.0-0, \
libx11-6, libx11-xcb1, libxkbcommon0, libxkbcommon-x11-0, libxcb1, libxcb-cursor0, libxcb-icccm4, libxcb-image0, \
libxcb-keysyms1, libxcb-randr0, libxcb-render0, libxcb-render-util0, libxcb-shape0, libxcb-shm0, libxcb-sync1, \
libxcb-util1, libxcb-xfixes0, libxcb-xinerama0, libxcb-xkb1"
NICE=(nice -n 10)  # the build is CPU-heavy; other work on the machine keeps priority

log() { printf '== %s\n' "$*"; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }
seconds() { date +%s; }

cd "$ROOT"
VERSION="$("$PY" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
META_VERSION="$("$PY" -c "import xml.etree.ElementTree as E; print(E.parse('resources/desktop/$METAINFO_ID.metainfo.xml').find('releases/release').get('version'))")"
[ "$VERSION" = "$META_VERSION" ] || die "pyproject.toml says $VERSION but the newest release in $METAINFO_ID.metainfo.xml is $META_VERSION"
for size in 16 24 32 48 64 128 256 512; do
    [ -f "resources/icons/tinymlops-$size.png" ] || die "resources/icons/tinymlops-$size.png missing: run QT_QPA_PLATFORM=offscreen python3 packaging/render_icons.py"
done
command -v dpkg-deb >/dev/null || die "dpkg-deb not found (Debian package dpkg)"
command -v readelf >/dev/null || die "readelf not found (Debian package binutils)"
command -v strip >/dev/null || die "strip not found (Debian package binutils)"
mkdir -p "$OUT"
T0=$(seconds)

# 0. Room on the disk. The previous outputs go first (this build replaces them; the venv stays, it is
#    the cache). Then: bundle ~1.0 GB + strip's rewritten copy of the largest library (TensorFlow's,
#    790 MB) + .deb 0.3 GB + PyInstaller work 0.1 GB, with a margin = 2.5 GB; a new venv 3 GB more
#    (measured 1.9 GB, plus pip's ~0.7 GB of downloads in its cache and temporary files). The .deb
#    staging tree hard-links the bundle and costs next to nothing.
BUILD_NEED_MB=2500
VENV_NEED_MB=3000
rm -rf "${DIST:?}/$APP" "$OUT/deb" "$OUT/${PKG}_"*"_amd64.deb"
NEED_MB=$BUILD_NEED_MB
[ -x "$VENV/bin/python" ] || NEED_MB=$((BUILD_NEED_MB + VENV_NEED_MB))
"$PY" "$ROOT/packaging/disk_space.py" "$OUT" "$NEED_MB" "the bundle and .deb build" || exit $?

# 1. An isolated venv holding the project (not editable) + PyInstaller: the bundle gets exactly the
#    project's dependencies, nothing the developer happens to have installed.
if [ ! -x "$VENV/bin/python" ]; then
    log "creating build venv $VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
fi
log "installing tinymlops-operator $VERSION and PyInstaller into the build venv"
"${NICE[@]}" "$VENV/bin/python" -m pip install -q "$ROOT[package]"
# Always the current source tree, even when the version number did not change.
"${NICE[@]}" "$VENV/bin/python" -m pip install -q --force-reinstall --no-deps "$ROOT"
T1=$(seconds)

# 2. The bundle.
log "PyInstaller (one-folder bundle)"
rm -rf "$DIST/$APP"
(cd "$OUT" && TF_CPP_MIN_LOG_LEVEL=2 "${NICE[@]}" "$VENV/bin/pyinstaller" --noconfirm --log-level WARN \
    --distpath "$DIST" --workpath "$OUT/work" "$ROOT/packaging/tinymlops.spec")
BUNDLE="$DIST/$APP"
# Symbol tables (.symtab/.strtab, never read at run time) out of the shared libraries: 259 MB, most of
# it TensorFlow's. Not PyInstaller's strip=True, which also strips the auditwheel-patched numpy/h5py
# libraries and breaks them (strip_bundle.py says why).
log "stripping symbol tables"
"${NICE[@]}" "$PY" "$ROOT/packaging/strip_bundle.py" "$BUNDLE"
GOT="$("$BUNDLE/$APP" --version)"
[ "$GOT" = "tinymlops $VERSION" ] || die "bundle reports '$GOT', expected 'tinymlops $VERSION'"
T2=$(seconds)

# 3. The Debian package: bundle under /opt, launcher on PATH, desktop entry, icons, AppStream.
log "Debian package"
STAGE="$OUT/deb/${PKG}_${VERSION}_amd64"
rm -rf "$STAGE"
mkdir -p "$STAGE/DEBIAN" "$STAGE/opt" "$STAGE/usr/bin" "$STAGE/usr/share/applications" \
    "$STAGE/usr/share/metainfo" "$STAGE/usr/share/icons/hicolor/scalable/apps" "$STAGE/usr/share/doc/$PKG"
# Hard links: the staging tree adds ~0 bytes instead of a second 1 GB copy (a full copy where the
# filesystem cannot link; cp says why).
if ! cp -al "$BUNDLE" "$STAGE/opt/$APP"; then
    log "hard links refused (cp's message above): copying the bundle, ~1 GB more on the disk"
    rm -rf "$STAGE/opt/$APP"
    cp -a "$BUNDLE" "$STAGE/opt/$APP"
fi
install -m 0755 "$ROOT/packaging/debian/tinymlops.sh" "$STAGE/usr/bin/$APP"
install -m 0644 "$ROOT/resources/desktop/tinymlops.desktop" "$STAGE/usr/share/applications/tinymlops.desktop"
install -m 0644 "$ROOT/resources/desktop/$METAINFO_ID.metainfo.xml" "$STAGE/usr/share/metainfo/$METAINFO_ID.metainfo.xml"
install -m 0644 "$ROOT/resources/icons/tinymlops.svg" "$STAGE/usr/share/icons/hicolor/scalable/apps/tinymlops.svg"
for size in 16 24 32 48 64 128 256 512; do
    dir="$STAGE/usr/share/icons/hicolor/${size}x${size}/apps"
    mkdir -p "$dir"
    install -m 0644 "$ROOT/resources/icons/tinymlops-$size.png" "$dir/tinymlops.png"
done
install -m 0644 "$ROOT/packaging/debian/copyright" "$STAGE/usr/share/doc/$PKG/copyright"
# Directories 0755 and files world-readable whatever the builder's umask was.
find "$STAGE" -type d -exec chmod 0755 {} +
chmod -R u+rw,go+r,go-w "$STAGE"
INSTALLED_KB="$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)"
DEPENDS="$("$PY" "$ROOT/packaging/elf_requirements.py" "$BUNDLE"), libgcc-s1, zlib1g, $QT_DEPENDS"
sed -e "s/@VERSION@/$VERSION/" -e "s/@INSTALLED_SIZE@/$INSTALLED_KB/" -e "s/@DEPENDS@/$DEPENDS/" \
    "$ROOT/packaging/debian/control.in" > "$STAGE/DEBIAN/control"
DEB="$OUT/${PKG}_${VERSION}_amd64.deb"
"${NICE[@]}" dpkg-deb --build --root-owner-group -Z"${DEB_COMPRESSION:-zstd}" "$STAGE" "$DEB" >/dev/null
T3=$(seconds)

# 4. Lint what desktops and software centres read, when the validators are installed
#    (Debian: desktop-file-utils, appstream).
if command -v desktop-file-validate >/dev/null; then
    desktop-file-validate "$STAGE/usr/share/applications/tinymlops.desktop"
fi
if command -v appstreamcli >/dev/null; then
    appstreamcli validate --no-net --pedantic "$STAGE/usr/share/metainfo/$METAINFO_ID.metainfo.xml" >/dev/null \
        || appstreamcli validate --no-net "$STAGE/usr/share/metainfo/$METAINFO_ID.metainfo.xml"
fi
dpkg-deb --info "$DEB" >/dev/null

log "done"
printf 'version        %s\n' "$VERSION"
printf 'bundle         %s (%s)\n' "$BUNDLE" "$(du -sh "$BUNDLE" | cut -f1)"
printf 'deb            %s (%s)\n' "$DEB" "$(du -h "$DEB" | cut -f1)"
printf 'installed size %s MB\n' "$((INSTALLED_KB / 1024))"
printf 'time           venv %ss, pyinstaller %ss, deb %ss, total %ss\n' \
    "$((T1 - T0))" "$((T2 - T1))" "$((T3 - T2))" "$((T3 - T0))"
