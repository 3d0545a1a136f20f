#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs and builds what it needs
# (heavy artifacts cached by input hash), checks formatting and lints, then runs
# every test, including the end-to-end ones that boot real VMs (QEMU/TCG on hosts
# without a usable KVM).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "installing dependencies (apt, cargo)"
bash scripts/deps.sh
bash scripts/deps-browser.sh

step "formatting"
cargo fmt --all -- --check

step "building the static guest binaries and the default image"
bash scripts/build-guest.sh
# A debug build: `cargo test` below reuses it, so CI compiles the host side once.
cargo build --locked -p hearth-cli
HEARTH_GUEST_BIN_DIR="$PWD/target/x86_64-unknown-linux-gnu/release" \
  ./target/debug/hearth image build --name default

step "lints"
cargo clippy --locked --workspace --all-targets -- -D warnings

step "tests"
# VM tests share two cores under TCG; more threads only make each boot slower.
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-2}
# One name per pgrep: it silently matches nothing for a pattern over 15 characters.
# Zombies are skipped: they have exited, and an init that never reaps (as in some
# sandboxes) would otherwise report them forever.
vmm_procs() {
  for name in qemu-system-x86 vhost-device-vs firecracker; do pgrep -x "$name" || true; done |
    while read -r p; do
      case "$(ps -o stat= -p "$p" 2>/dev/null)" in Z* | "") ;; *) echo "$p" ;; esac
    done | sort
}
before=$(vmm_procs)
status=0
cargo test --locked --workspace --no-fail-fast || status=$?

step "QEMU/KVM in a nested VM (scripts/nested.sh: real KVM under an emulated AMD SVM CPU)"
# This host's KVM is PVM and runs no standard guest; one level down, inside a QEMU/TCG
# VM, /dev/kvm is real. The same doctor and hearth-vmm suites then run against
# QEMU -accel kvm, networking included. Every test binary is already built above.
nested_started=$(date +%s)
# A run takes 6 to 10 minutes, bounded at 20 so a wedged outer VM cannot eat CI's 90.
# It does not gate the suite (yet): the emulated SVM under TCG is unstable here. The
# outer kernel dies in most runs ("stack guard page was hit" under svm_vcpu_run), and
# nested guests exit mid-boot after an XSAVE size mismatch in the emulated CPUID. So the
# step runs and reports on every run, loudly, and ARCHITECTURE.md says what is not proven.
nested_status=0
NESTED_TIMEOUT=1200 bash scripts/nested.sh bash scripts/nested/suite.sh || nested_status=$?
if [ "$nested_status" -eq 0 ]; then
  echo "NESTED QEMU/KVM: passed" >&2
else
  echo "NESTED QEMU/KVM: FAILED (status $nested_status; not gating, see ARCHITECTURE.md)" >&2
fi
echo "nested QEMU/KVM suites took $(($(date +%s) - nested_started)) s" >&2

step "checking that no VM outlived the tests"
leaked=$(comm -13 <(echo "$before") <(vmm_procs))
if [ -n "$leaked" ]; then
  echo "leaked VMM processes (killed now):" >&2
  for p in $leaked; do ps -o pid=,args= -p "$p" >&2 || true; kill -9 "$p" 2>/dev/null || true; done
  echo "0 passed, 1 failed: leak check" >&2
  exit 1
fi
exit "$status"
