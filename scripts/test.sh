#!/usr/bin/env bash
# The whole test suite: installs QEMU and OVMF when missing, then formatting, lints, every test
# (unit, integration against the real vmrun binary, real-QEMU tests, property tests), and the
# real-kernel VFIO test bed (tests/vfio-bed/run.sh: Debian's kernel under QEMU with an IOMMU).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh --tests
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# The output goes to a file that is followed, not through a pipe: a process a failing test
# leaves behind would hold a pipe open and hang the run.
cargo test --locked >"$log" 2>&1 &
tests=$!
tail -n +1 -f --pid="$tests" "$log"
wait "$tests" || status=$?
bed_status=0
tests/vfio-bed/run.sh 2>&1 | tee -a "$log" || bed_status=$?
[ "$bed_status" -eq 0 ] || status=$bed_status
# One closing line for the whole run: every test binary's result plus the bed's scenarios.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     /^vfio-bed: [0-9]+ passed, [0-9]+ failed$/ { p += $2; f += $4 }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
