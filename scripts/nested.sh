#!/usr/bin/env bash
# nested.sh CMD [ARGS...]: runs CMD inside an outer QEMU/TCG VM whose emulated CPU has
# AMD SVM with nested paging, so /dev/kvm in there is real KVM (not this host's PVM) and
# Firecracker and QEMU/KVM guests boot one level down. Output streams to stdout; the exit
# code is CMD's (125 when the outer VM itself failed).
#
# The outer VM runs Debian's stock kernel (linux-image-amd64, fetched with apt-get
# download) from a busybox-static initramfs that mounts this host's root read-only over
# virtio-9p with a tmpfs on top: every tool, binary and image of the host is there, and
# nothing written inside reaches the host. CMD runs in the current directory, as root,
# with these variables passed through: PATH HOME USER LANG CI, every HEARTH_*, RUST*,
# CARGO*, and the names listed in NESTED_ENV (space-separated).
#
# Settings: NESTED_MEM (MiB, default 4096), NESTED_SMP (default 2), NESTED_TIMEOUT
# (seconds, default 3600), HEARTH_CACHE_DIR (default ~/.cache/hearth: the kernel,
# modules and initramfs are cached there under nested/<input hash>).
# Needs (scripts/deps.sh): qemu-system-x86, busybox-static, kmod, cpio, apt.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
die() { echo "nested: $*" >&2; exit 125; }
[ $# -gt 0 ] || die "usage: nested.sh CMD [ARGS...]"

cache_root=${HEARTH_CACHE_DIR:-$HOME/.cache/hearth}/nested
busybox=/bin/busybox
# Modules the initramfs loads (with their dependencies) to reach the host's root.
initrd_modules="virtio_pci 9pnet_virtio 9p overlay"
# Modules stage2 loads from the unpacked package; nftables expressions autoload.
# kvm_amd's nested and npt are on by default; the kernel command line says so anyway.
load_modules="kvm_amd tun veth nf_tables nf_conntrack nft_ct nft_nat nft_masq nft_chain_nat"

kernel_pkg() {
    apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}'
}

pkg=$(kernel_pkg)
if [ -z "$pkg" ]; then
    apt-get update -qq >/dev/null 2>&1 || true
    pkg=$(kernel_pkg)
fi
[ -n "$pkg" ] || die "apt knows no linux-image-amd64 (run apt-get update)"
pkg_version=$(apt-cache policy "$pkg" | awk '/Candidate:/{print $2}')
kver=${pkg#linux-image-}
file -L "$busybox" 2>/dev/null | grep -q 'statically linked' ||
    die "$busybox is not static: install busybox-static (scripts/deps.sh)"
busybox_version=$(dpkg-query -W -f='${Version}' busybox-static)

key=$( {
    echo "recipe 1"
    echo "$pkg $pkg_version"
    echo "busybox-static $busybox_version"
    echo "$initrd_modules"
    cat "$here/nested/init"
} | sha256sum | cut -c1-16)
out=$cache_root/$key

build() {
    local tmp
    mkdir -p "$cache_root"
    tmp=$(mktemp -d "$cache_root/.build.XXXXXX")
    trap 'rm -rf "$tmp"' RETURN
    echo "nested: building the outer VM ($pkg $pkg_version) into $out" >&2
    (cd "$tmp" && apt-get download -q "$pkg=$pkg_version" >/dev/null 2>&1) ||
        die "apt-get download $pkg=$pkg_version failed"
    dpkg-deb -x "$tmp"/linux-image-*.deb "$tmp/pkg"
    depmod -b "$tmp/pkg" "$kver"
    local mods=$tmp/pkg/lib/modules/$kver
    mkdir -p "$tmp/out" "$tmp/initrd/modules"
    cp "$tmp/pkg/boot/vmlinuz-$kver" "$tmp/out/vmlinuz"
    # modules.dep: "path: dep1 dep2 ..." with the deepest dependency last, so load the
    # dependencies in reverse, then the module itself; each module once.
    local m line path order=()
    for m in $initrd_modules; do
        line=$(grep -E "/${m}\.ko(\.[a-z]+)?:" "$mods/modules.dep") || die "no module $m in $pkg"
        path=${line%%:*}
        read -r -a deps <<<"${line#*:}"
        local i
        for ((i = ${#deps[@]} - 1; i >= 0; i--)); do order+=("${deps[i]}"); done
        order+=("$path")
    done
    : >"$tmp/initrd/modules.order"
    for path in "${order[@]}"; do
        m=$(basename "$path")
        grep -qx "$m" "$tmp/initrd/modules.order" && continue
        cp "$mods/$path" "$tmp/initrd/modules/$m"
        echo "$m" >>"$tmp/initrd/modules.order"
    done
    mkdir -p "$tmp/initrd/bin"
    cp "$busybox" "$tmp/initrd/bin/busybox"
    install -m 0755 "$here/nested/init" "$tmp/initrd/init"
    (cd "$tmp/initrd" && find . | cpio -o -H newc --quiet | gzip -1) >"$tmp/out/initrd.gz"
    mv "$mods" "$tmp/out/modules"
    echo "$kver" >"$tmp/out/kver"
    rm -rf "$out"
    mv "$tmp/out" "$out"
}

[ -f "$out/initrd.gz" ] || build

run=$(mktemp -d /tmp/hearth-nested.XXXXXX)
qpid=
cleanup() {
    [ -n "$qpid" ] && kill "$qpid" 2>/dev/null
    rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cp "$here/nested/stage2" "$run/stage2"
{
    printf 'NESTED_KVER=%q\n' "$kver"
    printf 'NESTED_MODULES=%q\n' "$out/modules"
    printf 'NESTED_LOAD=%q\n' "$load_modules"
} >"$run/config"
{
    echo 'set -e'
    printf 'cd %q\n' "$PWD"
    for v in $(compgen -e); do
        case " $v " in
            " PATH " | " HOME " | " USER " | " LANG " | " CI " | " HEARTH_"* | " RUST"* | " CARGO"*) ;;
            *) case " ${NESTED_ENV:-} " in *" $v "*) ;; *) continue ;; esac ;;
        esac
        printf 'export %s=%q\n' "$v" "${!v}"
    done
    printf 'exec'
    printf ' %q' "$@"
    echo
} >"$run/cmd.sh"

qemu=${HEARTH_QEMU_BIN:-qemu-system-x86_64}
# -cpu max under TCG includes svm, npt and vgif; multidevs=remap keeps inode numbers
# unique across the host's mounts seen through one 9p export.
timeout=${NESTED_TIMEOUT:-3600}
# timeout(1) forwards our kill to QEMU and ends it when the command overruns.
timeout -k 10 "$timeout" "$qemu" -accel tcg,thread=multi -cpu max -m "${NESTED_MEM:-4096}" -smp "${NESTED_SMP:-2}" \
    -nodefaults -no-user-config -display none -no-reboot \
    -kernel "$out/vmlinuz" -initrd "$out/initrd.gz" \
    -append "console=ttyS0 quiet panic=-1 kvm_amd.nested=1 kvm_amd.npt=1" \
    -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
    -virtfs "local,path=$run,mount_tag=nested,security_model=none" \
    -chardev stdio,id=con,signal=off -serial chardev:con \
    </dev/null &
qpid=$!
status=0
wait "$qpid" || status=$?
qpid=
[ "$status" -ne 124 ] || die "timed out after ${timeout}s (NESTED_TIMEOUT)"
if [ ! -f "$run/rc" ]; then
    die "the outer VM ended (qemu status $status) without running the command to its end"
fi
exit "$(cat "$run/rc")"
