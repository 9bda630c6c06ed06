#!/usr/bin/env bash
# Installs what the benchmarks need on a fresh machine, beyond `make install`:
# wrk (the load generator, a Debian package) and bench/requirements.txt.
# Usage: bash bench/setup.sh [PIP]   (default .venv/bin/pip)
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="${1:-.venv/bin/pip}"

if ! command -v wrk >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=""
    elif command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "bench/setup.sh: wrk is missing; install it (apt-get install wrk)" >&2
        exit 1
    fi
    echo "bench/setup.sh: installing wrk" >&2
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi

"$PIP" install --quiet -r bench/requirements.txt
