# Shared by the end-to-end test scripts (tests/test_*.sh): the loqt binary, a scratch directory,
# and the ok / bad / check counters that end in "N passed, N failed".  Source it from the
# repository root after `set -u`:   . tests/lib.sh
BUILD=${BUILD:-build}
LOQT=${LOQT:-$BUILD/loqt}
PY=${PYTHON:-/usr/bin/python3}
passed=0
failed=0
ok() { echo "ok $1"; passed=$((passed + 1)); }
bad() { echo "FAIL $1: $2"; failed=$((failed + 1)); }
check() { # check NAME WHY-IF-FALSE COMMAND...: ok when COMMAND succeeds
    local name=$1 why=$2
    shift 2
    if "$@"; then ok "$name"; else bad "$name" "$why"; fi
}
# the summary line, and the exit status of the script
finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}
if [ ! -x "$LOQT" ]; then
    echo "FAIL setup: $LOQT not found (run make first)"
    echo "0 passed, 1 failed"
    exit 1
fi
LOQT=$(cd "$(dirname "$LOQT")" && pwd)/$(basename "$LOQT")
T=$(mktemp -d) || exit 1
if [ "${KEEP:-0}" = 1 ]; then echo "# scratch directory: $T"; else trap 'rm -rf "$T"' EXIT; fi
