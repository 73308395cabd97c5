#!/usr/bin/env bash
# Runs every test program given on the command line and sums their "N passed, N failed" lines.
# Reference files from PyTorch are generated first (tests/gen_*.py) when python3-torch is present.
set -u
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
mkdir -p "$BUILD/ref"
export LOQT_REF_DIR="$BUILD/ref"
for gen in tests/gen_*.py; do
    [ -e "$gen" ] || continue
    if ! "$PYTHON" -c "import torch" 2>/dev/null; then
        echo "error: $PYTHON cannot import torch; install Debian's python3-torch (see .ci/run)" >&2
        exit 1
    fi
    echo "== $gen"
    "$PYTHON" "$gen" "$BUILD/ref" || { echo "error: $gen failed" >&2; exit 1; }
done
passed=0; failed=0; broken=""
for t in "$@"; do
    echo "== $t"
    out=$("$t" 2>&1); rc=$?
    printf '%s\n' "$out" | grep -v '^ok ' 
    line=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -n 1)
    if [ -z "$line" ]; then
        broken="$broken $t(rc=$rc)"; failed=$((failed + 1)); continue
    fi
    p=${line%% passed*}; f=${line#*, }; f=${f%% failed*}
    passed=$((passed + p)); failed=$((failed + f))
    [ $rc -ne 0 ] && [ "$f" -eq 0 ] && { broken="$broken $t(rc=$rc)"; failed=$((failed + 1)); }
done
[ -n "$broken" ] && echo "test programs that crashed or printed no summary:$broken"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
