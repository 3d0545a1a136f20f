#!/usr/bin/env bash
# Builds the guest binaries (hearth-init, hearth-agent) as static glibc executables so
# they run in any rootfs. Output: target/x86_64-unknown-linux-gnu/release/.
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-gnu
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release -p hearth-guest --target "$target" --bins "$@"

out="target/$target/release"
for bin in hearth-init hearth-agent; do
    f="$out/$bin"
    [ -x "$f" ] || { echo "build-guest: $f missing" >&2; exit 1; }
    desc=$(file -b "$f")
    case "$desc" in
        *"statically linked"*|*"static-pie linked"*) ;;
        *) echo "build-guest: $f is not static: $desc" >&2; exit 1 ;;
    esac
    # ldd says "statically linked" (static-pie) or "not a dynamic executable".
    if ldd "$f" 2>&1 | grep -q '=>'; then
        echo "build-guest: ldd still lists libraries for $f" >&2; exit 1
    fi
    echo "build-guest: $f ($(du -h "$f" | cut -f1), static)" >&2
done
