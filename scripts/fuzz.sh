#!/usr/bin/env bash
# Coverage-guided fuzzing of loqt's parsers with libFuzzer.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     (default: 60 seconds each for every target)
#   RUNS=1000000 scripts/fuzz.sh 0 [TARGET...] (a number of executions instead of a time)
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
TARGETS=${*:-json safetensors config method_options shard state bpe cli tokenizer st_index}
CLANG=${CLANG:-clang}
OUT=${FUZZ_DIR:-build/fuzz}
# the library without OpenMP and with the portable GEMM, plus the CLI's option parser
LIB_SRC="$(find src -name '*.c' ! -path 'src/cli/*' | sort) src/cli/options.c"
CFLAGS="-std=c11 -g -O1 -D_GNU_SOURCE -Isrc -Wall -Wextra -Wno-unknown-pragmas -fno-omit-frame-pointer
        -fsanitize=fuzzer,address,undefined,float-cast-overflow -fno-sanitize-recover=undefined,float-cast-overflow"

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

seed_st_index() {
    local d=$OUT/seeds/st_index
    mkdir -p "$d"
    printf '%s' '{"metadata": {"total_size": 1024}, "weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors", "model.norm.weight": "model-00002-of-00002.safetensors", "lm_head.weight": "model-00002-of-00002.safetensors"}}' >"$d/seed0.json"
    printf '%s' '{"weight_map": {"a": "x.safetensors"}, "other": [1, 2]}' >"$d/seed1.json"
}

seed_config() {
    local d=$OUT/seeds/config
    mkdir -p "$d"
    cp configs/*.json "$d"/
    printf '%s' '{"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 10, "hidden_act": "silu", "rope_scaling": null}' >"$d/small.json"
}

seed_method_options() {
    local d=$OUT/seeds/method_options
    mkdir -p "$d"
    printf '%s' '{"rank": 128, "lora_alpha": 0.5, "update_proj_gap": 50, "proj_gap_progression": "exponential", "increment_size": 1.2, "max_proj_gap": 0, "compensate_quant_error_iterations": 5, "quantize_w": "4bit", "quantize_projection_matrix": "none", "use_double_quant": 1, "merge_optimizer_state": "keep", "lowrank_dtype": "fp32", "svd": "exact"}' >"$d/loqt.json"
    printf '%s' '{"rank": 64, "update_proj_gap": 200, "galore_scale": 0.25, "galore_state": "project", "weight_dtype": "bf16", "svd": "randomized"}' >"$d/galore.json"
    printf '%s' '{}' >"$d/empty.json"
}

seed_shard() {
    local d=$OUT/seeds/shard
    mkdir -p "$d"
    python3 - "$d" <<'PY'
import struct, sys
d = sys.argv[1]
for i, (n, vocab) in enumerate([(0, 10), (5, 10), (300, 32000)]):
    body = struct.pack("<8sIIQ", b"LOQTSHRD", 1, vocab, n) + bytes(40)
    body += b"".join(struct.pack("<H", (k * 7) % vocab) for k in range(n))
    open(f"{d}/seed{i}.bin", "wb").write(body)
PY
}

seed_state() {
    local d=$OUT/seeds/state
    mkdir -p "$d"
    FUZZ_WRITE_SEEDS="$d" "$OUT/fuzz_state"
}

seed_bpe() {
    local d=$OUT/seeds/bpe i=0
    mkdir -p "$d"
    for f in data/corpus/text/*.txt; do
        [ -f "$f" ] || continue
        head -c 600 "$f" >"$d/text$i.txt"
        i=$((i + 1))
    done
    printf 'caf\xc3\xa9 \xe2\x96\x81 \xff\xfe\x00tab\there  two  spaces\n' >"$d/bytes.txt"
}

# a small valid tokenizer file: the 3 specials, the 256 byte pieces, U+2581 and a few merges
seed_tokenizer() {
    local d=$OUT/seeds/tokenizer
    mkdir -p "$d"
    python3 - "$d/small.tok" <<'PY'
import struct, sys, zlib
pieces = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)]
pieces += ["\u2581", "a", "b", "\u2581a", "ab", "\u2581ab", "\u00e9"]
ids = {p: i for i, p in enumerate(pieces)}
merges = [("\u2581", "a"), ("a", "b"), ("\u2581a", "b")]
enc = [p.encode() for p in pieces]
body = b"".join(struct.pack("<H", len(e)) for e in enc) + b"".join(enc)
body += b"".join(struct.pack("<HH", ids[a], ids[b]) for a, b in merges)
text = sum(len(e) for e in enc)
hdr = b"LOQTTOKN" + struct.pack("<IIIIII", 1, len(pieces), len(merges), text, zlib.crc32(body), 0)
open(sys.argv[1], "wb").write(hdr + body)
PY
}

seed_cli() {
    local d=$OUT/seeds/cli
    mkdir -p "$d"
    printf -- '--int\0-3\0--num=1e-3\0--str\0x\0--pick\0bb\0--flag\0--choice\0zz' >"$d/all"
    printf -- '--rank\000128\0--galore-state\0reset\0--use_double_quant=true\0--lora-alpha\0000.4' >"$d/methods"
    printf -- '--help' >"$d/help"
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
    if [ -n "${RUNS:-}" ]; then what="$RUNS executions"; else what="$SECS s"; fi
    echo "== fuzzing $t for $what (log: $log)"
    rc=0
    limit=(-max_total_time="$SECS")
    [ -n "${RUNS:-}" ] && limit=(-runs="$RUNS")
    env=()
    [ "$t" = bpe ] && env=(LOQT_TOKENIZER="${LOQT_TOKENIZER:-data/llama.tok}")
    maxlen=4096
    [ "$t" = state ] && maxlen=65536 # the seeds are whole saved layers
    [ "$t" = bpe ] && maxlen=512     # lines, not documents: encoding is the slow part
    env "${env[@]}" "$OUT/fuzz_$t" "${limit[@]}" -timeout=10 -max_len=$maxlen -print_final_stats=1 "${dict[@]}" \
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
