#!/usr/bin/env bash
# The whole test suite, as the README says: ./scripts/test.sh
# Installs what the interop and browser tests need (Debian packages, PyPI and npm packages,
# cargo-fuzz) through the suites' own scripts, then runs: format and lint checks; unit,
# property, crash (50 SIGKILLs) and end-to-end tests over real sockets; the real-peer suites; a
# short fuzz of every decoder. FUZZ_SECONDS (default 10) sets the fuzz time per target.
#
# In CI (CI=true, or TICKWIRE_REQUIRE_ALL=1, which .ci/run sets) every suite is required: a
# missing suite script, a suite that cannot install its tools, SKIP_FUZZ=1, or a test run that
# counts zero tests fails the run. Elsewhere a suite that cannot install its tools may skip
# (exit 77, scripts/strict.sh); it is reported loudly here and in the closing summary.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/strict.sh
export CARGO_TERM_COLOR=never
started=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$*" "$(( $(date +%s) - started ))"; }

suites=(scripts/test-fix-interop.sh scripts/test-mqtt-interop.sh scripts/test-tls.sh scripts/test-grpc.sh scripts/test-cluster.sh scripts/test-deploy.sh scripts/test-console.sh scripts/test-clients.sh scripts/test-otel.sh scripts/fuzz-smoke.sh)
# Checked first, so a missing or renamed suite fails in seconds rather than after the build.
for suite in "${suites[@]}"; do
    if [ ! -f "$suite" ]; then
        echo "test.sh: suite $suite is missing: every suite is required" >&2
        exit 1
    fi
done
if [ "${SKIP_FUZZ:-0}" = 1 ]; then
    if require_all; then
        echo "test.sh: SKIP_FUZZ=1 is refused in CI: every suite is required" >&2
        exit 1
    fi
    suites=("${suites[@]/scripts\/fuzz-smoke.sh/}")
fi

step "format"
cargo fmt --all --check

step "lint"
cargo clippy --workspace --all-targets -- -D warnings

step "unit, property, crash and end-to-end tests"
log=$(mktemp)
cargo test --workspace 2>&1 | tee "$log"
passed=$(passed_count "$log")
rm -f "$log"
if [ "$passed" -eq 0 ]; then
    echo "test.sh: cargo test passed 0 tests" >&2
    exit 1
fi

# Suites against real peers and a real browser, and the fuzz smoke; each installs what it needs.
skipped=()
for suite in "${suites[@]}"; do
    [ -n "$suite" ] || continue
    step "$suite"
    rc=0
    bash "$suite" || rc=$?
    if [ "$rc" -eq "$SKIP_RC" ] && ! require_all; then
        skipped+=("$suite")
    elif [ "$rc" -ne 0 ]; then
        echo "test.sh: $suite failed (exit $rc)" >&2
        exit 1
    fi
done
[ "${SKIP_FUZZ:-0}" = 1 ] && skipped+=("scripts/fuzz-smoke.sh (SKIP_FUZZ=1)")

step "cargo test: $passed tests passed"
if [ "${#skipped[@]}" -gt 0 ]; then
    echo "################################################################################"
    for s in "${skipped[@]}"; do
        echo "## SKIPPED, nothing checked: $s"
    done
    echo "## Not a full run: CI (CI=true or TICKWIRE_REQUIRE_ALL=1) requires every suite."
    echo "################################################################################"
    step "suites passed, ${#skipped[@]} SKIPPED"
else
    step "all suites passed"
fi
