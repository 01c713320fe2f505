#!/usr/bin/env bash
# Quick start on a fresh Debian 12 machine: installs QEMU and OVMF if missing, builds vmrun,
# checks the demo profile against this host and prints the QEMU command line it produces.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo build --release --locked
./target/release/vmrun check demo
./target/release/vmrun show demo
