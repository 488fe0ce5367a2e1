#!/usr/bin/env bash
# FIX 4.4 interop against a real QuickFIX (C++ engine, PyPI `quickfix`) counterparty:
# installs quickfix (cached wheel after the first build), then runs the ignored Rust
# integration tests in crates/cli/tests/fix_interop.rs, which start the real tickwire binary
# and tests/interop/fix/peer.py as provider and as client on free loopback ports.
set -uo pipefail
cd "$(dirname "$0")/.."

if ! bash scripts/install-quickfix.sh; then
    echo "FIX INTEROP: FAILED (could not install quickfix)"
    exit 1
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
log=$(mktemp)
cargo test -p tickwire --test fix_interop -- --ignored --test-threads=1 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
summary=$(grep -E '^test result:' "$log" | tail -1)
rm -f "$log"
if [ "$rc" -eq 0 ] && [ -n "$summary" ]; then
    echo "FIX INTEROP: PASSED ($summary)"
    exit 0
fi
echo "FIX INTEROP: FAILED (cargo exit $rc; ${summary:-no test summary})"
exit 1
