# Sourced by the experiment scripts: one training run that starts, resumes from its newest
# checkpoint, or is skipped when finished.
#   run_or_resume NAME DIR STEPS LOQT-BINARY TRAIN-ARGS...
run_or_resume() {
    local name=$1 dir=$2 steps=$3 loqt=$4
    shift 4
    if [ -f "$dir/metrics.jsonl" ] && grep -q "\"final\": true, \"step\": $steps," "$dir/metrics.jsonl"; then
        echo "== $name: finished"
        return 0
    fi
    local resume=()
    if ls -d "$dir"/checkpoints/step-* >/dev/null 2>&1; then resume=(--resume latest)
    elif [ -e "$dir/metrics.jsonl" ]; then resume=(--overwrite); fi # stopped before its first checkpoint
    echo "== $name: ${resume[*]:-start} ($(date -u +%H:%M:%S))"
    "$loqt" train "$@" --num-training-steps "$steps" --output-dir "$dir" "${resume[@]}"
}
