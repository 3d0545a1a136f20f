#!/usr/bin/env bash
# Runs inside the outer VM (scripts/nested.sh bash scripts/nested/suite.sh [--server]):
# the KVM code paths that this host's PVM cannot run. Expects the debug build and the
# test binaries of `cargo test --workspace` already built on the host (nothing compiles
# in here: the outer VM is TCG), and the default image.
#   HEARTH_VMM=qemu (default): QEMU with -accel kvm.
#   HEARTH_VMM=firecracker HEARTH_FIRECRACKER_BIN=... [HEARTH_JAILER_BIN=...
#     HEARTH_JAILER_UID_GID=...]: Firecracker, jailed when a jailer is given.
# --server adds the server's end-to-end suite (hearth-server/tests/e2e.rs).
set -euo pipefail
cd "$(dirname "$0")/../.."
export HEARTH_VMM=${HEARTH_VMM:-qemu} HEARTH_ACCEL=kvm
# Overlay templates made here, on tmpfs: 9p cannot report a file's holes, so cloning the
# image's template through it would read the whole GiB for every VM.
export HEARTH_CACHE_DIR=/tmp/hearth-cache
if [ -n "${HEARTH_JAILER_BIN:-}" ]; then
    export HEARTH_JAILER_UID_GID=${HEARTH_JAILER_UID_GID:-65534:65534}
fi
echo "==> nested: $(uname -r), $(grep -m1 -o 'svm' /proc/cpuinfo || echo 'no svm'), HEARTH_VMM=$HEARTH_VMM${HEARTH_JAILER_BIN:+ (jailed)}"
doctor=$(./target/debug/hearth doctor --boot --json) || { echo "$doctor"; exit 1; }
echo "$doctor"
# No PVM marker in here: detection must call this KVM usable, not fall back to TCG.
grep -q '"kvm_usable": true' <<<"$doctor" || { echo "nested: KVM not detected as usable" >&2; exit 1; }
# --workspace: the same feature resolution as the host's build, so cargo finds every
# test binary fresh instead of compiling under TCG.
tests=(--test vm_lifecycle --test agent_client --test vm_network --test vm_control --test firecracker_api)
if [ "${1:-}" = --server ]; then
    tests+=(--test e2e)
fi
# One test at a time whatever RUST_TEST_THREADS says (CI sets 2 for the host): the
# outer VM has 2 TCG vCPUs, and concurrent nested guests are where it misbehaved (see
# ARCHITECTURE.md).
cargo test --workspace --locked --offline --no-fail-fast "${tests[@]}" -- --test-threads "${NESTED_TEST_THREADS:-1}"
