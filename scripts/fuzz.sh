#!/usr/bin/env bash
# Coverage-guided fuzzing of loqt's parsers with libFuzzer.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     (default: 60 seconds each for json and safetensors)
#
# Builds build/fuzz/fuzz_TARGET from fuzz/fuzz_TARGET.c with clang
# -fsanitize=fuzzer,address,undefined (UB aborts instead of just printing), writes a seed corpus to
# build/fuzz/seeds/TARGET, and runs each target for SECONDS on one core.  The corpus libFuzzer
# grows is kept in build/fuzz/corpus/TARGET, so later runs start where earlier ones stopped.
# Crashing inputs land in build/fuzz/crashes/ (replay one: build/fuzz/fuzz_TARGET FILE).
# Exit status 1 if any target crashed.  Needs clang and its compiler-rt (Debian: clang,
# libclang-rt-14-dev).  Environment: CLANG (compiler), FUZZ_DIR (instead of build/fuzz).
set -euo pipefail
export LC_ALL=C # ${#s} below must count bytes, not characters
cd "$(dirname "$0")/.."

SECS=${1:-60}
[ $# -gt 0 ] && shift
TARGETS=${*:-json safetensors}
CLANG=${CLANG:-clang}
OUT=${FUZZ_DIR:-build/fuzz}
LIB_SRC="src/core/error.c src/core/json.c src/core/mem.c src/core/rng.c src/io/fileutil.c src/io/safetensors.c"
CFLAGS="-std=c11 -g -O1 -D_GNU_SOURCE -Isrc -Wall -Wextra -Wno-unknown-pragmas -fno-omit-frame-pointer
        -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"

command -v "$CLANG" >/dev/null || { echo "error: $CLANG not found (apt-get install clang)" >&2; exit 1; }
mkdir -p "$OUT/seeds" "$OUT/corpus" "$OUT/crashes"

# ---- seed corpora ----
seed_json() {
    local d=$OUT/seeds/json i=0 s
    mkdir -p "$d"
    for s in \
        '{"hidden_size": 768, "num_hidden_layers": 12, "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "tie_word_embeddings": false, "x": null}' \
        '[1, -2.5, 3e10, 0.001, -0, 1E-7, [], {}, [[[[1]]]], ""]' \
        '"esc \" \\ \/ \b \f \n \r \t \u0041 \u00e9 \ud83d\ude00"' \
        '{"a": {"b": {"c": [true, false, null]}}, "a": 2}' \
        '{"__metadata__":{"format":"pt"},"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,12]}}' \
        '"raw UTF-8: é € 😀"'; do
        printf '%s' "$s" >"$d/seed$i.json"
        i=$((i + 1))
    done
}

# 8 little-endian bytes of $1
le64() {
    local n=$1 i
    for i in 0 1 2 3 4 5 6 7; do printf "\\$(printf '%03o' $(((n >> (8 * i)) & 255)))"; done
}

# st_file FILE HEADER DATA_BYTES: a safetensors file whose data bytes are 0x01
st_file() {
    { le64 "${#2}"; printf '%s' "$2"; head -c "$3" /dev/zero | tr '\0' '\1'; } >"$1"
}

seed_safetensors() {
    local d=$OUT/seeds/safetensors
    mkdir -p "$d"
    st_file "$d/seed0.safetensors" '{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"F16","shape":[4],"data_offsets":[24,32]},"c":{"dtype":"BF16","shape":[],"data_offsets":[32,34]},"d":{"dtype":"I64","shape":[1],"data_offsets":[34,42]}}' 42
    st_file "$d/seed1.safetensors" '{}      ' 0
    st_file "$d/seed2.safetensors" '{"e":{"dtype":"U8","shape":[0,4],"data_offsets":[0,0]},"u":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},"i":{"dtype":"I32","shape":[1,1],"data_offsets":[3,7]}}' 7
    st_file "$d/seed3.safetensors" '{"l\u00fc.\ud83d\ude00":{"dtype":"I16","shape":[2],"data_offsets":[0,4]},"x":{"dtype":"U16","shape":[1],"data_offsets":[4,6]},"y":{"dtype":"I8","shape":[2],"data_offsets":[6,8]}}  ' 8
}

# ---- build and run ----
failed=""
for t in $TARGETS; do
    src=fuzz/fuzz_$t.c
    [ -f "$src" ] || { echo "error: no $src" >&2; exit 1; }
    echo "== building $OUT/fuzz_$t"
    # shellcheck disable=SC2086
    "$CLANG" $CFLAGS "$src" $LIB_SRC -lm -o "$OUT/fuzz_$t"
    "seed_$t"
    mkdir -p "$OUT/corpus/$t"
    dict=()
    [ -f "fuzz/$t.dict" ] && dict=("-dict=fuzz/$t.dict")
    log=$OUT/fuzz_$t.log
    echo "== fuzzing $t for $SECS s (log: $log)"
    rc=0
    "$OUT/fuzz_$t" -max_total_time="$SECS" -timeout=10 -print_final_stats=1 "${dict[@]}" \
        -artifact_prefix="$OUT/crashes/$t-" "$OUT/corpus/$t" "$OUT/seeds/$t" >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)
    corp=$(grep -o 'corp: [0-9]*' "$log" | tail -n 1 || true)
    echo "   $t: ${execs:-?} executions (${speed:-?}/s), ${cov:-cov: ?} edges, ${corp:-corp: ?} inputs in the corpus"
    if [ $rc -ne 0 ]; then
        echo "   $t: CRASH (exit $rc), see $log and $OUT/crashes/"
        grep -m 5 -E 'ERROR|runtime error|SUMMARY|Test unit written' "$log" | sed 's/^/     /' || true
        failed="$failed $t"
    fi
done
if [ -n "$failed" ]; then
    echo "crashed:$failed"
    exit 1
fi
echo "no crashes"
