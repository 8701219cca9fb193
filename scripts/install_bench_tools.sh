#!/usr/bin/env bash
# Install what `make bench` needs beyond the venv: wrk (HTTP load generator). Idempotent.
set -euo pipefail

if command -v wrk >/dev/null 2>&1; then
    echo "wrk: $(wrk --version 2>&1 | head -n1 | cut -c1-60)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "wrk is missing and installing it needs root (apt-get install wrk)" >&2
        exit 1
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "wrk is missing and there is no apt-get here: install wrk with your package manager" >&2
    exit 1
fi

echo "installing wrk with apt-get"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends wrk
wrk --version 2>&1 | head -n1
