#!/usr/bin/env bash
# Ed25519 signature verification for the C core, fetched at build time from a package registry
# (never copied into this repository): the SUPERCOP reference implementation of Ed25519 (Bernstein,
# Duif, Lange, Schwabe, Yang; public domain) with its SHA-512, as shipped in the PyPI source
# distribution of python-ed25519 1.5. The archive's SHA-256 is pinned: a changed archive stops the
# build instead of entering the firmware.
#   firmware/deps/fetch_ed25519.sh DEST    -> DEST/ed25519-supercop-ref/*.c *.h
set -euo pipefail
DEST="${1:?usage: fetch_ed25519.sh DEST}"
VERSION=1.5
SHA256=02053ee019ceef0df97294be2d4d5a8fc120fc86e81e08bec1245fc0f9403358
SRC="$DEST/ed25519-supercop-ref"
[ -f "$SRC/.fetched-$SHA256" ] && exit 0
PY="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# the source archive only (--no-binary for this package alone); pip reads its metadata in an
# isolated build environment of released setuptools/wheel, whatever this Python has installed
"$PY" -m pip download -q --no-deps --no-binary ed25519 "ed25519==$VERSION" -d "$tmp" >&2
archive="$tmp/ed25519-$VERSION.tar.gz"
echo "$SHA256  $archive" | sha256sum -c --quiet -
mkdir -p "$DEST"
rm -rf "$SRC"
tar -xzf "$archive" -C "$tmp"
cp -r "$tmp/ed25519-$VERSION/src/ed25519-supercop-ref" "$SRC"
touch "$SRC/.fetched-$SHA256"
