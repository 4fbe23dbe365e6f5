#!/usr/bin/env bash
# The one script for a lent GPU (a bare H200: 16 cores, torch 2.11, no mmaction2, no network), sized
# to a 6-minute slot: build the CUDA kernels for sm_90 with every core, run the GPU smoke tests, run
# compute-sanitizer's memcheck, racecheck and initcheck on a small case, benchmark the essential table
# (the issue's targets: lateral_concat forward and backward at every fusion point, strided resampling,
# and every kernel op at batch 1; the backbone's headline rows), print it, and pack everything into
# $OUT. Every step has a cap; the caps sum to at most TOTAL_S (360 s) less a few seconds for the
# table and the tarball. A step may also use what earlier steps left unused of their caps, never the
# time the later steps' caps keep, and no step runs past what is left of TOTAL_S. A failed or
# timed-out step makes the exit status non-zero, but the later steps still run and the table still
# prints.
#
# Without a GPU (to prove the script end to end, as CI's test does) the GPU steps report "skipped: no
# GPU" and the benchmark steps run on the CPU at tiny sizes, so the same plumbing writes the same files.
#
# Usage (from anywhere):  bash benchmarks/gpu_check.sh          run it
#                         bash benchmarks/gpu_check.sh --plan   print each step's cap and their sum
# Env: TOTAL_S (overall budget, s; default 360), BENCH_OUT (results dir), OUT (if set, a tarball of
# results and logs is written there: the lent machine returns files from $OUT), MAX_JOBS (nvcc jobs;
# default: every core).
set -u
cd "$(dirname "$0")/.."

# Caps in seconds, in the order the steps run. The build is the critical path of the slot: sm_90 only
# and one nvcc per translation unit in parallel. The smoke tests are `-m "cuda and not slow"`
# (tests marked slow need a longer lease: `pytest -m cuda`). The sanitizers wrap python + torch,
# which is slow, on a small case (tests/cuda_sanitizer_case.py; --quick for racecheck and initcheck).
# The benchmarks: bench_kernels (forward, backward, resampling at batch 8: 76 cases of ~0.25 s at the
# --quick budget, plus ~10 s of start-up and bandwidth probe), bench_kernels_b1 (the same ops at
# batch 1, one layout: 22 small cases) and bench_backbone (16 rows, cuDNN autotuning included).
CAPS=(build=115 pytest_cuda=80 sanitizer_memcheck=25 sanitizer_racecheck=15 sanitizer_initcheck=15
    bench_kernels=45 bench_kernels_b1=15 bench_backbone=40)
# Seconds kept for GPU detection, the table and the tarball.
RESERVE_S=10

cap() {
    local entry
    for entry in "${CAPS[@]}"; do
        if [[ ${entry%%=*} == "$1" ]]; then
            echo "${entry#*=}"
            return
        fi
    done
    echo "no cap for step $1" >&2
    exit 2
}

# later_caps NAME: the sum of the caps of the steps after NAME (the time they keep).
later_caps() {
    local entry seen=0 sum=0
    for entry in "${CAPS[@]}"; do
        ((seen)) && sum=$((sum + ${entry#*=}))
        [[ ${entry%%=*} == "$1" ]] && seen=1
    done
    echo "$sum"
}

TOTAL_S=${TOTAL_S:-360}
if [[ ${1:-} == --plan ]]; then
    sum=0
    for entry in "${CAPS[@]}"; do
        printf '%-22s %4s s\n' "${entry%%=*}" "${entry#*=}"
        sum=$((sum + ${entry#*=}))
    done
    printf '%-22s %4s s\n' reserve "$RESERVE_S" "sum" "$((sum + RESERVE_S))"
    exit 0
fi

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

# Without a GPU the caps are tripled: the plumbing check runs the benchmarks on a (possibly busy)
# 2-core CPU, which is no measure of the GPU slot.
CAP_SCALE=$((HAVE_GPU ? 1 : 3))

# step NAME CMD...: run CMD under `timeout`, its limit NAME's cap or, when earlier steps finished
# early, what is left of TOTAL_S less the reserve and the later steps' caps, if that is more; never
# more than what is left of TOTAL_S less the reserve. Output to $LOG_DIR/NAME.log, the log's tail
# printed if it fails.
step() {
    local name=$1
    shift
    local cap_s left limit spare
    cap_s=$(($(cap "$name") * CAP_SCALE))
    left=$((TOTAL_S - RESERVE_S - ($(date +%s) - START)))
    spare=$((left - $(later_caps "$name") * CAP_SCALE))
    limit=$((spare > cap_s ? spare : cap_s))
    limit=$((limit < left ? limit : left))
    if ((limit < 5)); then
        record "$name" "skipped: out of time" 0 "TOTAL_S=$TOTAL_S spent"
        FAILED=1
        return
    fi
    echo "== $name (limit ${limit}s): $*"
    local t0 rc took
    t0=$(date +%s)
    timeout --kill-after=5 "$limit" "$@" >"$LOG_DIR/$name.log" 2>&1
    rc=$?
    took=$(($(date +%s) - t0))
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

# 1. Build: sm_90 only (H100/H200), one nvcc job per core. Without a GPU the CPU-only build already
#    installed is left alone, since rebuilding it would replace the library other processes load.
if ((HAVE_GPU)); then
    command -v ninja >/dev/null || python -c "import ninja" 2>/dev/null ||
        echo "warning: ninja not found: torch's build falls back to compiling one file at a time"
    step build env FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
        pip install --no-build-isolation --no-deps -e .
    python -c "import slowfast_fast; print('backends on cuda:', slowfast_fast.available_backends('cuda'))"
else
    record build "skipped: no GPU" 0 "using the installed build"
fi

# 2. The GPU smoke tests; --durations says which to move to `slow` if the step nears its cap. Triton
#    runs each kernel's default config only (one JIT compile per variant instead of one per config);
#    the CPU tests cover the autotuner's capture and key logic, `pytest -m cuda` tunes for real.
if ((HAVE_GPU)); then
    step pytest_cuda env SLOWFAST_FAST_TRITON_AUTOTUNE=0 python -m pytest -m "cuda and not slow" -q -p no:cacheprovider --durations=15 \
        --continue-on-collection-errors
else
    record pytest_cuda "skipped: no GPU" 0 ""
fi

# 3. Sanitizers. memcheck without PyTorch's caching allocator: a small out-of-bounds read would
#    otherwise land inside one of its larger blocks and go unseen.
SANITIZER_CASE=tests/cuda_sanitizer_case.py
for tool in memcheck racecheck initcheck; do
    name="sanitizer_$tool"
    if ((!HAVE_GPU)); then
        record "$name" "skipped: no GPU" 0 ""
    elif ! command -v compute-sanitizer >/dev/null; then
        record "$name" "skipped: no tool" 0 "compute-sanitizer is not on PATH"
    elif [[ $tool == memcheck ]]; then
        step "$name" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --error-exitcode 1 \
            python "$SANITIZER_CASE"
    else
        step "$name" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool "$tool" --error-exitcode 1 \
            python "$SANITIZER_CASE" --quick
    fi
done

# 4. The essential benchmark table, for the backend `auto` picks on CUDA (the compiled kernels; Triton's
#    JIT compiles and autotuning would not fit the slot), at the --quick timing budget:
#    - bench_kernels: resampling (the strided 1/8 and 1/4 and the identity), then lateral_concat
#      forward and backward at every fusion point of both configs, fp32 and bf16, both layouts, at
#      batch 8. The run measures its copy bandwidth and launch cost first, so the table's sums carry
#      the performance model's predicted time and measured / predicted (compare with
#      `python benchmarks/gpu_design_model.py`'s predictions).
#    - bench_kernels_b1: the same three ops at batch 1 (the target: under 10 µs or within 2x the
#      roofline), 4x16, channels_last_3d (the layout the optimized backbone runs in), into batch1/.
#    - bench_backbone: 4x16 in channels_last_3d, fp32 and bf16; the rows that matter run first
#      (inference at batch 8 and the training step, then batch 1), so a timeout keeps them.
#    The torch.compile peers are left out (minutes of compiling); `python -m slowfast_fast.bench
#    --full` on a longer lease runs everything. Each op's rows are written as its cases finish.
KERNEL_OPS=resample,lateral_concat,lateral_concat_backward
if ((HAVE_GPU)); then
    BENCH=(python -m slowfast_fast.bench --device cuda --quick --no-compile --no-plots)
    step bench_kernels "${BENCH[@]}" --out "$BENCH_OUT" --ops "$KERNEL_OPS" --backends cuda --configs 4x16,8x8
    step bench_kernels_b1 "${BENCH[@]}" --out "$BENCH_OUT/batch1" --ops "$KERNEL_OPS" --backends cuda \
        --kernel-batch 1 --configs 4x16 --layouts channels_last_3d
    step bench_backbone "${BENCH[@]}" --out "$BENCH_OUT" --ops backbone --layouts channels_last_3d
else
    # The plumbing only: tiny sizes (their kernel batch is 1 already), one layout, 4x16 (--quick).
    BENCH=(python -m slowfast_fast.bench --device cpu --size tiny --quick --no-compile --no-plots
        --layouts ncdhw)
    step bench_kernels "${BENCH[@]}" --out "$BENCH_OUT" --ops "$KERNEL_OPS"
    step bench_kernels_b1 "${BENCH[@]}" --out "$BENCH_OUT/batch1" --ops "$KERNEL_OPS" --kernel-batch 1
    step bench_backbone "${BENCH[@]}" --out "$BENCH_OUT" --ops backbone
fi

echo
echo "== results ($DEVICE$( ((HAVE_GPU)) || echo ', tiny CPU sizes: plumbing check, not GPU numbers'))"
# On the CPU the numbers only prove the plumbing, so a busy machine does not hide the table.
MARKDOWN_ARGS=(--device "$DEVICE" --summary)
((HAVE_GPU)) || MARKDOWN_ARGS+=(--allow-loaded)
python -m slowfast_fast.bench.markdown "$BENCH_OUT" "${MARKDOWN_ARGS[@]}" 2>&1 || echo "(no results to show)"
echo
echo "== results at batch 1 (the kernel ops)"
python -m slowfast_fast.bench.markdown "$BENCH_OUT/batch1" "${MARKDOWN_ARGS[@]}" 2>&1 || echo "(no results to show)"

echo
echo "== gpu_check: $(($(date +%s) - START)) s in all (budget ${TOTAL_S} s)"
SUMMARY=$(
    printf '%-22s %-26s %6s  %s\n' step status s note
    for line in "${STEPS[@]}"; do echo "$line"; done
)
echo "$SUMMARY"
echo "$SUMMARY" >"$LOG_DIR/summary.txt"

if [[ -n ${OUT:-} && -d ${OUT:-} ]]; then
    tar czf "$OUT/gpu_check.tar.gz" "$BENCH_OUT" && echo "wrote $OUT/gpu_check.tar.gz"
fi
exit $FAILED
