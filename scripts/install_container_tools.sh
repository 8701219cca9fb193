#!/usr/bin/env bash
# Install what `make image-test` needs beyond the venv: buildah (build), podman + runc (run),
# skopeo (copy/push images), debootstrap + debian-archive-keyring (the local Debian base image),
# fuse-overlayfs + uidmap (rootless storage). Idempotent: does nothing when all are present.
#
# Debian/Ubuntu with apt-get; needs root (or sudo). The base image and the tests also run as root:
# debootstrap, `buildah mount` and chroot-isolated builds need it.
set -euo pipefail

TOOLS=(buildah podman skopeo runc debootstrap)
PACKAGES=(buildah podman skopeo runc debootstrap debian-archive-keyring fuse-overlayfs uidmap)

missing=()
for tool in "${TOOLS[@]}"; do
    # runc and debootstrap live in sbin, which a non-root PATH may lack.
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || [ -x "/sbin/$tool" ] || missing+=("$tool")
done
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)

if [ "${#missing[@]}" -eq 0 ]; then
    echo "container tools: $(buildah --version | cut -d' ' -f1-3), $(podman --version), $(skopeo --version | cut -d' ' -f1-3)"
    exit 0
fi

# With recommends: podman's (conmon, catatonit, containers-common config) are what it runs with here.
bash "$(dirname "$0")/apt_install.sh" "make image-test" "${PACKAGES[@]}"
echo "container tools: $(buildah --version | cut -d' ' -f1-3), $(podman --version), $(skopeo --version | cut -d' ' -f1-3)"
