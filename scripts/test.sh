#!/usr/bin/env bash
# The whole test suite: installs QEMU and OVMF when missing, then formatting, lints and every
# test (unit, integration against the real vmrun binary, real-QEMU tests, property tests).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
