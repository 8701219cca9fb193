#!/usr/bin/env bash
# apt_install.sh WHAT PACKAGE...: install Debian packages that a make target needs, with root or
# sudo, or fail saying what to install by hand. Callers check first whether anything is missing.
set -euo pipefail
what="$1"; shift

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "$what: installing needs root (apt-get install $*)" >&2
        exit 1
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "$what: no apt-get here: install $* with your package manager" >&2
    exit 1
fi
echo "$what: installing $* with apt-get"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
