#!/usr/bin/env bash
# Installs what building and booting Hearth guests needs. Idempotent and fast when the
# machine is already set up: apt only runs if a package is missing. Run as root.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "deps: run as root (installs Debian packages)" >&2
    exit 1
fi

packages=(
    # VMM and guest tooling
    qemu-system-x86 qemu-utils
    # rootfs: debootstrap + ext4 images (mkfs.ext4 -d, resize2fs, e2fsck, debugfs)
    debootstrap e2fsprogs
    # kernel build
    linux-source-6.1 build-essential bc bison flex libelf-dev libssl-dev cpio xz-utils
    # host networking
    nftables iproute2
    # Deno comes from PyPI's wheel: pip to fetch it, python's zipfile to unpack it;
    # hearth-server's schemathesis test installs Schemathesis (PyPI) into a venv
    python3 python3-pip python3-venv
    # build-guest.sh checks that guest binaries are static
    file
    # host tests: the agent's jail tests run the host's busybox, and hearth-net's VM
    # tests copy it into a throw-away root with no libc (so it must be the static one)
    busybox-static
    # scripts/nested.sh: depmod for the outer VM's kernel modules (and modprobe inside
    # it); the kernel itself is fetched with `apt-get download linux-image-amd64`
    kmod
)

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$status" = installed ] || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "deps: Debian packages already installed" >&2
fi

# The pip Debian ships may be shadowed by another python3 on PATH; either works.
if ! python3 -m pip --version >/dev/null 2>&1; then
    echo "deps: python3 has no pip module; install python3-pip" >&2
    exit 1
fi

# The agent's host tests run real Deno; the PyPI package ships the binary.
if ! python3 -c 'import deno' >/dev/null 2>&1; then
    echo "deps: pip install deno" >&2
    python3 -m pip install --quiet deno
fi

if ! command -v vhost-device-vsock >/dev/null 2>&1; then
    echo "deps: cargo install vhost-device-vsock" >&2
    cargo install --locked --quiet vhost-device-vsock
fi

rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-gnu \
    || rustup target add x86_64-unknown-linux-gnu

echo "deps: ok" >&2
