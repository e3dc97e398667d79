#!/usr/bin/env bash
# Installs what the application and its tests need, once: Debian packages (when root and missing)
# and a virtual environment in .venv with the project installed editable. Sourced by start.sh and
# test.sh; safe to run again (it only does what is missing).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TINYMLOPS_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

# mosquitto: the real broker the tests run against; libmosquitto-dev: the POSIX C device's MQTT client; arm toolchain + qemu: the firmware target;
# cmake + cmocka: the firmware's host tests; clang + libclang-rt-14-dev: its libFuzzer targets;
# the X/EGL libraries: Qt's offscreen and xcb platforms.
# desktop-file-utils, appstream: validate the desktop entry and metainfo; binutils: the bundle build.
# openocd, stlink-tools: `tinymlops firmware flash` on STM32 boards (and its tests, with no probe attached).
DEBS=(mosquitto rabbitmq-server libmosquitto-dev libssl-dev gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm cmake libcmocka-dev
      clang libclang-rt-14-dev
      libegl1 libgl1 libxkbcommon0 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3 libglib2.0-0
      libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 libxcb-xinerama0 libxcb-randr0
      libxcb-render-util0 libxcb-image0 python3-venv desktop-file-utils appstream binutils
      openocd stlink-tools)
if command -v dpkg-query >/dev/null && command -v apt-get >/dev/null; then
    missing=()
    for p in "${DEBS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        SUDO=()
        if [ "$(id -u)" != 0 ]; then
            if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
                SUDO=(sudo -n)
            else
                echo "bootstrap: missing Debian packages (the QEMU, firmware and broker tests need them); run:" >&2
                echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
                missing=()
            fi
        fi
        if [ ${#missing[@]} -gt 0 ]; then
            echo "bootstrap: installing Debian packages: ${missing[*]}"
            "${SUDO[@]}" apt-get update -qq
            "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                "${missing[@]}" >/dev/null
        fi
    fi
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "bootstrap: creating $VENV"
    "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.tinymlops-installed"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
    echo "bootstrap: installing Python packages into $VENV (first run takes a minute or two)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e "$ROOT[test,report,flash]" 2>&1 | { grep -v "^WARNING: Location" || true; }
    touch "$STAMP"
fi
