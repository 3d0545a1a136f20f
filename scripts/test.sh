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
# A run takes 6 to 10 minutes; a wedged outer VM must not eat CI's 90, so each attempt
# is bounded at 20. The emulated SVM under TCG is itself unstable: the outer kernel dies
# in some runs ("stack guard page was hit" under svm_vcpu_run; scripts/nested.sh then
# exits 125). That is a crash of the emulation, not a verdict on our code, so such a run
# is tried again from a fresh outer VM, up to 3 times. A test that fails is a failure;
# it gets one more run only because the outer VM it ran in may be what broke it.
# If all 3 outer VMs die, the step cannot judge: it says so loudly and in the summary
# (NESTED UNVERIFIED), and does not fail the suite.
nested_status=1 nested_fails=0 nested_log=$(mktemp)
for attempt in 1 2 3; do
  nested_status=0
  NESTED_TIMEOUT=1200 bash scripts/nested.sh bash scripts/nested/suite.sh 2>&1 |
    tee "$nested_log" || nested_status=${PIPESTATUS[0]}
  [ "$nested_status" -ne 0 ] || break
  echo "nested: attempt $attempt of 3 failed (status $nested_status)" >&2
  # A test that failed before the outer VM died still counts as a failure.
  if [ "$nested_status" -ne 125 ] || grep -q -e '^test .* FAILED' -e 'test result: FAILED' "$nested_log"; then
    nested_fails=$((nested_fails + 1))
    [ "$nested_fails" -lt 2 ] || break
  fi
done
if [ "$nested_status" -eq 125 ] && [ "$nested_fails" -eq 0 ]; then
  echo "NESTED UNVERIFIED: the outer VM died in all 3 attempts; no nested test failed" >&2
elif [ "$nested_status" -ne 0 ]; then
  status=1
fi
rm -f "$nested_log"
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
