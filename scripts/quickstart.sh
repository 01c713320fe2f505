#!/usr/bin/env bash
# Quick start on a fresh Debian 12 machine, as root: installs QEMU and OVMF if missing, builds
# vmrun, checks the demo profile, boots it (OVMF under TCG, vCPU pinned with SCHED_RR), waits for
# the UEFI shell on its serial console, shows its status, and stops it again.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo build --release --locked
vmrun=./target/release/vmrun
"$vmrun" check demo
"$vmrun" run demo --detach
console=$("$vmrun" show demo --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["paths"]["console_log"])')
echo "waiting for the UEFI shell on $console ..."
for _ in $(seq 1 120); do
    if grep -aq 'Shell>' "$console" 2>/dev/null; then
        break
    fi
    sleep 1
done
"$vmrun" status demo
if grep -aq 'Shell>' "$console"; then
    echo "the demo VM booted OVMF to its UEFI shell"
else
    echo "the demo VM did not reach the UEFI shell within 120 s" >&2
fi
# The UEFI shell ignores ACPI power-off: after the profile's 5 s vmrun quits QEMU (exit code 5).
"$vmrun" stop demo || [ $? -eq 5 ]
