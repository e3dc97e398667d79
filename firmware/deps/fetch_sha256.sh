#!/usr/bin/env bash
# SHA-256 for the C core, fetched at build time from a package registry (never copied into this
# repository): HACL*'s portable SHA-2 (Hacl_Hash_SHA2.c, MIT licence; the High Assurance
# Cryptographic Library of INRIA, CMU and Microsoft, formally verified for memory safety and
# functional correctness against the FIPS 180-4 specification; the same code backs CPython's
# hashlib since 3.12 and Firefox's NSS), as shipped in the PyPI source distribution of pyhacl 1.0.1
# (hacl-star/dist/gcc-compatible and the karamel headers it includes). The archive's SHA-256 is
# pinned: a changed archive stops the build instead of entering the firmware.
#   firmware/deps/fetch_sha256.sh DEST    -> DEST/hacl-sha2/{Hacl_Hash_SHA2.c, *.h, internal/, karamel/}
set -euo pipefail
DEST="${1:?usage: fetch_sha256.sh DEST}"
VERSION=1.0.1
SHA256=2c7653b79fca0a00540602baeb2ab9774e4736de79561e67f755bcddf9ec7598
SRC="$DEST/hacl-sha2"
[ -f "$SRC/.fetched-$SHA256" ] && exit 0
PY="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# the source archive only (--no-binary for this package alone); pip reads its metadata in an
# isolated build environment of released setuptools/cython, whatever this Python has installed
"$PY" -m pip download -q --no-deps --no-binary pyhacl "pyhacl==$VERSION" -d "$tmp" >&2
archive="$tmp/pyhacl-$VERSION.tar.gz"
echo "$SHA256  $archive" | sha256sum -c --quiet -
tar -xzf "$archive" -C "$tmp"
dist="$tmp/pyhacl-$VERSION/hacl-star/dist"
mkdir -p "$DEST"
rm -rf "$SRC"
mkdir -p "$SRC/internal" "$SRC/karamel"
for f in Hacl_Hash_SHA2.c Hacl_Hash_SHA2.h Hacl_Streaming_Types.h Hacl_Krmllib.h; do
    cp "$dist/gcc-compatible/$f" "$SRC/"
done
for f in Hacl_Hash_SHA2.h Hacl_Streaming_Types.h Hacl_Krmllib.h; do
    cp "$dist/gcc-compatible/internal/$f" "$SRC/internal/"
done
cp -r "$dist/karamel/include" "$SRC/karamel/include"
cp -r "$dist/karamel/krmllib/dist/minimal" "$SRC/karamel/minimal"
cp "$tmp/pyhacl-$VERSION/hacl-star/LICENSE" "$SRC/LICENSE-hacl-star"
touch "$SRC/.fetched-$SHA256"
