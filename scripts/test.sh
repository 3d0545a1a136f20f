#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs and builds what it needs
# (cached by input hash), checks formatting and lints, then runs every test,
# including the end-to-end ones that boot real VMs (QEMU/TCG on hosts without a
# usable KVM).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

HEARTH_NO_SERVE=1 bash scripts/install.sh

step "formatting and lints"
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings

step "tests"
# VM tests share two cores under TCG; more threads only make each boot slower.
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-2}
cargo test --locked --workspace --no-fail-fast
