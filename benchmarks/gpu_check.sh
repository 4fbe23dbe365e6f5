#!/usr/bin/env bash
# The one script for a lent GPU: build with the CUDA kernels, run the CUDA tests, run the CUDA
# sanitizers on a small case, run the kernel and backbone benchmarks at full size, and print a short
# table last. Every step has a time limit and the whole run stays under TOTAL_S seconds (default 420,
# inside an 8-minute slot); a failed or timed-out step makes the exit status non-zero, but the later
# steps still run and the table still prints.
#
# Without a GPU (to prove the script end to end) the GPU steps report "skipped: no GPU" and the
# benchmark steps run on the CPU at tiny sizes, so the same plumbing writes the same files.
#
# Usage (from the repository root):  bash benchmarks/gpu_check.sh
# Env: TOTAL_S (overall budget, s), BENCH_OUT (results dir), OUT (if set, a tarball of results and
# logs is written there: the lent machine returns files from $OUT).
set -u
cd "$(dirname "$0")/.."

TOTAL_S=${TOTAL_S:-420}
BENCH_OUT=${BENCH_OUT:-benchmarks/results/gpu_check}
LOG_DIR="$BENCH_OUT/logs"
mkdir -p "$LOG_DIR"
START=$(date +%s)
STEPS=()
FAILED=0

if python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    HAVE_GPU=1
    DEVICE=cuda
    python -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
else
    HAVE_GPU=0
    DEVICE=cpu
    echo "No GPU: GPU steps are skipped; benchmarks run on the CPU at tiny sizes."
fi

# record NAME STATUS SECONDS NOTE
record() { STEPS+=("$(printf '%-22s %-26s %6s  %s' "$1" "$2" "$3" "$4")"); }

# step NAME CAP_SECONDS CMD...: run CMD under `timeout`, its limit the smaller of CAP_SECONDS and
# what is left of TOTAL_S; output to $LOG_DIR/NAME.log, the log's tail printed if it fails.
step() {
    local name=$1 cap=$2
    shift 2
    local left=$((TOTAL_S - ($(date +%s) - START)))
    local limit=$((cap < left ? cap : left))
    if ((limit < 5)); then
        record "$name" "skipped: out of time" 0 "TOTAL_S=$TOTAL_S spent"
        FAILED=1
        return
    fi
    echo "== $name (limit ${limit}s): $*"
    local t0=$(date +%s) rc
    timeout --kill-after=10 "$limit" "$@" >"$LOG_DIR/$name.log" 2>&1
    rc=$?
    local took=$(($(date +%s) - t0))
    if ((rc == 0)); then
        record "$name" "ok" "$took" ""
    else
        FAILED=1
        if ((rc == 124 || rc == 137)); then
            record "$name" "FAILED: timeout" "$took" "limit ${limit}s; partial output in $LOG_DIR/$name.log"
        else
            record "$name" "FAILED: exit $rc" "$took" "see $LOG_DIR/$name.log"
        fi
        echo "-- last lines of $LOG_DIR/$name.log:"
        tail -n 30 "$LOG_DIR/$name.log"
    fi
}

# 1. Build. sm_90 only (H100/H200) halves nvcc's work; the CPU-only build already installed here is
#    left alone without a GPU, since rebuilding it would replace the library other processes load.
if ((HAVE_GPU)); then
    step build 180 env FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=${MAX_JOBS:-8} \
        pip install --no-build-isolation --no-deps -e .
    python -c "import slowfast_fast; print('backends on cuda:', slowfast_fast.available_backends('cuda'))"
else
    record build "skipped: no GPU" 0 "using the installed build"
fi

# 2. The CUDA-marked tests.
if ((HAVE_GPU)); then
    step pytest_cuda 90 python -m pytest -m cuda -q -p no:cacheprovider --continue-on-collection-errors
else
    record pytest_cuda "skipped: no GPU" 0 ""
fi

# 3. Sanitizers on the CUDA engineer's small case.
SANITIZER_CASE=tests/cuda_sanitizer_case.py
for tool in memcheck racecheck; do
    if ((!HAVE_GPU)); then
        record "sanitizer_$tool" "skipped: no GPU" 0 ""
    elif [[ ! -f $SANITIZER_CASE ]]; then
        record "sanitizer_$tool" "skipped: no case" 0 "$SANITIZER_CASE is missing"
    elif ! command -v compute-sanitizer >/dev/null; then
        record "sanitizer_$tool" "skipped: no tool" 0 "compute-sanitizer is not on PATH"
    else
        step "sanitizer_$tool" 45 compute-sanitizer --tool "$tool" --error-exitcode 1 python "$SANITIZER_CASE"
    fi
done

# 4. Benchmarks. On the GPU: full sizes, every config, dtype and layout. The torch.compile peers
#    are left out (--no-compile): one compilation per shape costs minutes in all, and BASELINE.md
#    already measured that compile does not speed these ops up; run `--full` on a longer lease.
if ((HAVE_GPU)); then
    BENCH=(python -m slowfast_fast.bench --device cuda --full --no-compile --out "$BENCH_OUT")
else
    BENCH=(python -m slowfast_fast.bench --device cpu --size tiny --quick --no-compile --layouts ncdhw
        --out "$BENCH_OUT")
fi
step bench_kernels 150 "${BENCH[@]}" --ops lateral_concat,lateral_concat_backward,resample
step bench_backbone 120 "${BENCH[@]}" --ops backbone

echo
echo "== results ($DEVICE$( ((HAVE_GPU)) || echo ', tiny CPU sizes: plumbing check, not GPU numbers'))"
python -m slowfast_fast.bench.markdown "$BENCH_OUT" --device "$DEVICE" --summary 2>&1 || echo "(no results to show)"

if [[ -n ${OUT:-} && -d ${OUT:-} ]]; then
    tar czf "$OUT/gpu_check.tar.gz" "$BENCH_OUT" && echo "wrote $OUT/gpu_check.tar.gz"
fi

echo
echo "== gpu_check: $(($(date +%s) - START)) s in all (budget ${TOTAL_S} s)"
printf '%-22s %-26s %6s  %s\n' step status s note
for line in "${STEPS[@]}"; do echo "$line"; done
exit $FAILED
