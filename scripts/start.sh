#!/usr/bin/env bash
# Starts the application (installing it first when needed). Without arguments: the GUI on the
# embedded default, an in-process MQTT broker and a virtual fleet. Arguments go to `tinymlops`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
exec "$VENV/bin/tinymlops" "$@"
