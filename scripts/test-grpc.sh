#!/usr/bin/env bash
# gRPC edge end to end: installs the Python peer (grpcio, grpcio-tools, grpcio-health-checking
# from PyPI; scripts/install-grpc-peers.sh), then runs the Rust client test (tests/grpc.rs) and
# the Python grpcio client generated from the proto file at test time (tests/grpc_interop.rs,
# ignored in a plain `cargo test`) against the real binary. Each must run exactly the tests it
# has: a test binary that ran none, or fewer than expected, fails the suite, and so does any
# failed test. Exits non-zero on failure; the last line is the summary.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/strict.sh

if ! scripts/install-grpc-peers.sh; then
    # Without the peer nothing can be checked: a loud skip locally, a failure in CI.
    skip_or_fail "gRPC interop" "could not install grpcio / grpcio-tools"
fi

log=$(mktemp)
status=0
problems=()
# test binary, extra args, how many tests it must pass
for spec in "grpc||6" "grpc_interop|--ignored|1"; do
    IFS='|' read -r t extra want <<<"$spec"
    one=$(mktemp)
    # shellcheck disable=SC2086 # $extra is one optional flag
    cargo test -p tickwire --test "$t" -- $extra --nocapture 2>&1 | tee "$one"
    rc=${PIPESTATUS[0]}
    cat "$one" >>"$log"
    got=$(passed_count "$one")
    rm -f "$one"
    if [ "$rc" != 0 ]; then
        status=1
        problems+=("$t: cargo test exit $rc")
    elif [ "$got" -lt "$want" ]; then
        status=1
        problems+=("$t: $got tests passed, $want expected")
    fi
done

summary=$(grep -E '^gRPC interop: ' "$log" | tail -1)
if [ "$status" = 0 ]; then
    echo "gRPC: PASSED — Rust client tests ok; Python grpcio ${summary#gRPC interop: }"
    rm -f "$log"
else
    echo "gRPC: FAILED — ${problems[*]:-}; ${summary:-no interop summary} (log: $log)"
fi
exit "$status"
