#!/usr/bin/env bash
# Install what `make bench` needs beyond the venv: wrk (HTTP load generator). Idempotent.
set -euo pipefail
command -v wrk >/dev/null 2>&1 || bash "$(dirname "$0")/apt_install.sh" "make bench" wrk
wrk --version 2>&1 | head -n1 | cut -c1-60 || true  # wrk --version exits 1
