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
# One apt at a time: .ci/run starts `make test` and `make databricks-test` together, and on a fresh machine each may
# install something (Node for one, Java for the other); a second apt-get would fail on the first's dpkg lock.
lock="${TMPDIR:-/tmp}/mlops-apt-install.lock"
(
    flock -w 900 9 || { echo "$what: another install held $lock for 15 minutes" >&2; exit 1; }
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$@" >/dev/null
) 9>"$lock"
