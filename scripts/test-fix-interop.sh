#!/usr/bin/env bash
# FIX 4.4 interop against a real QuickFIX (C++ engine, PyPI `quickfix`) counterparty:
# installs quickfix (cached wheel after the first build), then runs the ignored Rust
# integration tests in crates/cli/tests/fix_interop.rs, which start the real tickwire binary
# and tests/interop/fix/peer.py as provider and as client on free loopback ports. Passes only
# when every one of those tests ran and passed ("0 passed" is a failure).
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/strict.sh

# The ignored tests in fix_interop.rs; raise it with each new one.
EXPECTED=2

if ! bash scripts/install-quickfix.sh; then
    skip_or_fail "FIX INTEROP" "could not install quickfix"
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
log=$(mktemp)
cargo test -p tickwire --test fix_interop -- --ignored --test-threads=1 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
summary=$(grep -E '^test result:' "$log" | tail -1)
passed=$(passed_count "$log")
rm -f "$log"
if [ "$rc" -eq 0 ] && [ "$passed" -ge "$EXPECTED" ]; then
    echo "FIX INTEROP: PASSED ($summary)"
    exit 0
fi
echo "FIX INTEROP: FAILED (cargo exit $rc; $passed of $EXPECTED tests passed; ${summary:-no test summary})"
exit 1
