# Sourced by the suite scripts: when may a suite skip, and how it says so.
#
# CI (CI set to anything but "", "0" or "false"; .ci/run also sets TICKWIRE_REQUIRE_ALL=1) or
# TICKWIRE_REQUIRE_ALL=1: every suite must run and check something, so a tool that cannot be
# installed fails the suite. Elsewhere (a laptop without network, say) a suite may skip, but it
# says so loudly and exits SKIP_RC, which test.sh reports as a skip, never as a pass.

SKIP_RC=77

require_all() {
    [ "${TICKWIRE_REQUIRE_ALL:-0}" = 1 ] && return 0
    case "${CI:-}" in
        "" | 0 | false | FALSE | False) return 1 ;;
        *) return 0 ;;
    esac
}

# skip_or_fail SUITE REASON: fails the suite in strict mode; otherwise a loud skip.
skip_or_fail() {
    local suite="$1" reason="$2"
    if require_all; then
        echo "$suite: FAILED: $reason (CI requires every suite to run; see scripts/strict.sh)" >&2
        exit 1
    fi
    {
        echo "################################################################################"
        echo "## $suite: SKIPPED: $reason"
        echo "## Nothing was checked. CI (CI=true or TICKWIRE_REQUIRE_ALL=1) fails here instead."
        echo "################################################################################"
    } >&2
    exit "$SKIP_RC"
}

# passed_count LOG: the sum of "N passed" over every `test result:` line cargo test printed.
passed_count() {
    grep -E '^test result: ' "$1" | sed -E 's/.* ([0-9]+) passed.*/\1/' | awk '{s += $1} END {print s + 0}'
}
