#!/usr/bin/env bash
# One command from a fresh machine to a running server: dependencies from the
# registries, the `hearth` binary on PATH, the default guest image, then `hearth serve`.
# Set HEARTH_NO_SERVE=1 to stop after the build (used by the test script).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "installing dependencies (apt, cargo)"
bash scripts/deps.sh

step "building hearth (release)"
cargo build --release --locked -p hearth-cli

step "building the static guest binaries"
bash scripts/build-guest.sh

prefix=${HEARTH_PREFIX:-/usr/local}
step "installing into $prefix"
install -d "$prefix/bin" "$prefix/lib/hearth"
install -m 0755 target/release/hearth "$prefix/bin/hearth"
install -m 0755 target/x86_64-unknown-linux-gnu/release/hearth-init \
  target/x86_64-unknown-linux-gnu/release/hearth-agent "$prefix/lib/hearth/"

step "building the default guest image (cached by input hash; minutes when cold)"
"$prefix/bin/hearth" image build --name default

step "checking the host"
"$prefix/bin/hearth" doctor || true

if [ "${HEARTH_NO_SERVE:-0}" = 1 ]; then
  exit 0
fi
step "starting hearth serve (Ctrl-C stops it)"
exec "$prefix/bin/hearth" serve
