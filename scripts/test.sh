#!/usr/bin/env bash
# The whole test suite, as the README says: ./scripts/test.sh
# Installs what the interop and browser tests need (Debian packages, PyPI packages) through
# the suites' own scripts, then runs: format and lint checks; unit, property, crash (50 SIGKILLs)
# and end-to-end tests over real sockets; the real-peer suites; a short fuzz of every decoder.
# FUZZ_SECONDS (default 10) sets the fuzz time per target; SKIP_FUZZ=1 skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
started=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$*" "$(( $(date +%s) - started ))"; }

step "format"
cargo fmt --all --check

step "lint"
cargo clippy --workspace --all-targets -- -D warnings

step "unit, property, crash and end-to-end tests"
cargo test --workspace

# Suites against real peers and a real browser; each installs what it needs.
for suite in scripts/test-fix-interop.sh scripts/test-mqtt-interop.sh scripts/test-console.sh; do
    if [ -f "$suite" ]; then
        step "$suite"
        bash "$suite"
    fi
done

if [ "${SKIP_FUZZ:-0}" != 1 ]; then
    step "fuzz smoke"
    bash scripts/fuzz-smoke.sh
fi

step "all suites passed"
