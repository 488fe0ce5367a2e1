#!/usr/bin/env bash
# Runs every cargo-fuzz target in the workspace briefly (FUZZ_SECONDS each, default 10):
# a smoke test that the decoders still survive arbitrary input. Longer runs are by hand:
#   cd crates/<crate>/fuzz && cargo +nightly fuzz run <target> -- -max_total_time=600
# Every target found under crates/*/fuzz/fuzz_targets/ must be listed by cargo fuzz, build, run
# and execute inputs; anything less fails (a listing that fails or comes back short is a
# failure, not zero targets that pass).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/strict.sh
secs="${FUZZ_SECONDS:-10}"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    # Pinned so a new release cannot change the flags it passes unannounced.
    version="${CARGO_FUZZ_VERSION:-0.13.2}"
    echo "fuzz-smoke: installing cargo-fuzz $version (crates.io)"
    if ! cargo install cargo-fuzz --locked --version "$version"; then
        skip_or_fail fuzz-smoke "cargo-fuzz could not be installed"
    fi
fi

# cargo fuzz passes unstable flags (-Zsanitizer=address). A nightly toolchain takes them; where
# there is none (and none can be downloaded: this machine reaches package registries only), the
# stable toolchain takes them with RUSTC_BOOTSTRAP=1, so the smoke never depends on a second
# toolchain being installed.
if cargo +nightly --version >/dev/null 2>&1; then
    fuzz=(cargo +nightly fuzz)
    echo "fuzz-smoke: toolchain $(cargo +nightly --version)"
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
    echo "fuzz-smoke: no nightly toolchain; stable with RUSTC_BOOTSTRAP=1: $(cargo --version)"
fi

# One target dir for every fuzz workspace, outside the clone, so CI runs reuse builds.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/tickwire-fuzz-target}"
mkdir -p "$CARGO_TARGET_DIR"
expected=0
ran=0
failed=0
problems=()
for dir in crates/*/fuzz; do
    [ -f "$dir/Cargo.toml" ] || continue
    # What must run: one target per source file (each is a [[bin]] of the fuzz crate).
    want=$(cd "$dir/fuzz_targets" && ls -- *.rs 2>/dev/null | sed 's/\.rs$//' | sort)
    n=$(printf '%s\n' "$want" | grep -c . || true)
    expected=$((expected + n))
    if ! listed=$(cd "$dir" && "${fuzz[@]}" list 2>"$CARGO_TARGET_DIR/fuzz-list.log"); then
        failed=$((failed + 1))
        problems+=("$dir: cargo fuzz list failed")
        echo "fuzz-smoke: $dir: cargo fuzz list FAILED:"
        cat "$CARGO_TARGET_DIR/fuzz-list.log"
        continue
    fi
    listed=$(printf '%s\n' "$listed" | grep . | sort || true)
    if [ "$listed" != "$want" ]; then
        failed=$((failed + 1))
        problems+=("$dir: cargo fuzz lists [$(echo $listed)], fuzz_targets/ has [$(echo $want)]")
        echo "fuzz-smoke: $dir: cargo fuzz lists [$(echo $listed)] but fuzz_targets/ has [$(echo $want)]"
    fi
    for target in $want; do
        echo "fuzz-smoke: $dir $target (${secs}s)"
        corpus="$CARGO_TARGET_DIR/corpus/$(basename "$(dirname "$dir")")-$target"
        mkdir -p "$corpus"
        seeds=()
        # cargo fuzz runs inside the fuzz dir, so the seed path is relative to it.
        [ -d "$dir/seeds/$target" ] && seeds=("seeds/$target")
        log="$CARGO_TARGET_DIR/fuzz-$target.log"
        ran=$((ran + 1))
        if ! (cd "$dir" && "${fuzz[@]}" run "$target" "$corpus" "${seeds[@]}" -- \
                -max_total_time="$secs" -print_final_stats=1) >"$log" 2>&1; then
            failed=$((failed + 1))
            problems+=("$target failed")
            echo "fuzz-smoke: $target FAILED; last lines of $log:"
            tail -40 "$log"
            continue
        fi
        # A run that exits 0 having executed nothing checked nothing.
        units=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -1)
        if [ -z "$units" ] || [ "$units" -eq 0 ]; then
            failed=$((failed + 1))
            problems+=("$target executed no input")
            echo "fuzz-smoke: $target executed no input; last lines of $log:"
            tail -20 "$log"
        else
            echo "fuzz-smoke: $target: $units inputs"
        fi
    done
done
if [ "$expected" -eq 0 ]; then
    failed=$((failed + 1))
    problems+=("no fuzz targets found under crates/*/fuzz/fuzz_targets")
fi
echo "fuzz-smoke: $ran of $expected targets run, $failed problems${problems[*]:+: ${problems[*]}}"
[ "$failed" -eq 0 ] && [ "$ran" -eq "$expected" ]
