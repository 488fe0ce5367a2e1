#!/usr/bin/env bash
# Runs every cargo-fuzz target in the workspace briefly (FUZZ_SECONDS each, default 10):
# a smoke test that the decoders still survive arbitrary input. Longer runs are by hand:
#   cd crates/<crate>/fuzz && cargo +nightly fuzz run <target> -- -max_total_time=600
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${FUZZ_SECONDS:-10}"
# cargo fuzz needs nightly (for the sanitizer flags). Machines without it, where it cannot be
# installed either, skip this smoke loudly rather than fail the suite: the decoders' property
# tests still run in `cargo test`.
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing the nightly toolchain"
    if ! rustup toolchain install nightly --profile minimal; then
        echo "fuzz-smoke: SKIPPED: no nightly toolchain on this machine"
        exit 0
    fi
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz"
    if ! cargo install cargo-fuzz --locked; then
        echo "fuzz-smoke: SKIPPED: cargo-fuzz could not be installed"
        exit 0
    fi
fi
# One target dir for every fuzz workspace, outside the clone, so CI runs reuse builds.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/tickwire-fuzz-target}"
ran=0
failed=0
for dir in crates/*/fuzz; do
    [ -f "$dir/Cargo.toml" ] || continue
    for target in $(cd "$dir" && cargo +nightly fuzz list); do
        echo "fuzz-smoke: $dir $target (${secs}s)"
        corpus="$CARGO_TARGET_DIR/corpus/$(basename "$(dirname "$dir")")-$target"
        mkdir -p "$corpus"
        seeds=()
        # cargo fuzz runs inside the fuzz dir, so the seed path is relative to it.
        [ -d "$dir/seeds/$target" ] && seeds=("seeds/$target")
        log="$CARGO_TARGET_DIR/fuzz-$target.log"
        if (cd "$dir" && cargo +nightly fuzz run "$target" "$corpus" "${seeds[@]}" -- \
                -max_total_time="$secs" -print_final_stats=1) >"$log" 2>&1; then
            grep -E "stat::number_of_executed_units" "$log" || true
        else
            failed=$((failed + 1))
            echo "fuzz-smoke: $target FAILED; last lines of $log:"
            tail -40 "$log"
        fi
        ran=$((ran + 1))
    done
done
echo "fuzz-smoke: $ran targets run, $failed failed"
[ "$failed" -eq 0 ]
