#!/usr/bin/env bash
# The open GPU checks in one run of at most ~8 minutes: versions, the Pallas kernel compiled for
# the GPU (tests), attention kernels in bfloat16 up to T=16k against cuDNN (attn bench), and
# vmapped sweep programs at K=8 and K=64 against sequential trials (benchmarks/sweep.py).
#
#   bash benchmarks/gpu_check.sh            # from the repository root
#
# Every part runs under its own `timeout` (cut further so that the whole script keeps to
# GPU_CHECK_BUDGET seconds); a part that fails or times out is reported and the next one runs.
# A summary table is printed last. Results go to $OUT (default ./gpu_check_out), at most seven
# files: gpu_check.log (all output), summary.md, bench.md, bench.json, bench.png, sweep.json
# and, if time was left for it, sweep_mqar.json. Bench and sweep files are written as each
# length or K completes, so a run cut short keeps what it measured.
#
# Environment:
#   PYTHON            interpreter (default python3)
#   GPU_CHECK_WHEELS  folder of wheels for the packages the machine lacks (tensorflow-datasets,
#                     grain, ml_collections, ...), installed with pip --target into
#                     GPU_CHECK_SITE (default /tmp/site) and put on PYTHONPATH (default .whl;
#                     skipped if the folder does not exist)
#   GPU_CHECK_DRY     1: tiny sizes (a CPU run that checks the script itself); 0: full sizes;
#                     unset: full sizes if JAX sees a GPU, else tiny ones
#   GPU_CHECK_BUDGET  seconds for the whole script (default 480)

set -uo pipefail

START=$SECONDS
BUDGET=${GPU_CHECK_BUDGET:-480}
PYTHON=${PYTHON:-python3}
OUT=${OUT:-$PWD/gpu_check_out}
WHEELS=${GPU_CHECK_WHEELS:-.whl}
SITE=${GPU_CHECK_SITE:-/tmp/site}
WORK=$(mktemp -d /tmp/gpu_check.XXXXXX)
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
TEE_PID=$!

export PYTHONUNBUFFERED=1 MPLBACKEND=Agg TFDS_DATA_DIR=$WORK/tfds
# Summary lines, one per part: "name|status|seconds|note".
STATUS_FILE=$WORK/status

banner() { printf '\n========== %s (%ds elapsed) ==========\n' "$1" $((SECONDS - START)); }

# run_part NAME SECONDS LOG COMMAND...: COMMAND under `timeout`, its output shown and kept in
# LOG; the limit is cut to what the budget leaves (less 15 s for the summary). Sets PART_RC.
run_part() {
    local name=$1 limit=$2 log=$3
    shift 3
    local left=$((BUDGET - (SECONDS - START) - 15))
    ((limit > left)) && limit=$left
    banner "$name (limit ${limit}s)"
    if ((limit < 10)); then
        echo "skipped: no time left in the ${BUDGET}s budget"
        PART_RC=125 PART_STATUS="$name|skipped (no time)|0"
        return
    fi
    local began=$SECONDS
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$log"
    PART_RC=${PIPESTATUS[0]}
    local status="ok"
    if ((PART_RC == 124 || PART_RC == 137)); then
        status="TIMEOUT after ${limit}s"
    elif ((PART_RC != 0)); then
        status="FAILED (exit $PART_RC)"
    fi
    PART_STATUS="$name|$status|$((SECONDS - began))"
}

# pytest_counts LOG: "N passed, M failed, ..." from pytest's last line, or counted from its
# verbose lines when it was stopped before printing one.
pytest_counts() {
    local line
    line=$(grep -E '^=+ .*(passed|failed|error|skipped|deselected).* in [0-9.]+s' "$1" | tail -1)
    if [[ -n $line ]]; then
        sed -E 's/^=+ (.*) in [0-9.]+s.*$/\1/' <<<"$line"
    else
        # Verbose result lines: "[gw0] [ 5%] PASSED tests/..." (xdist) or "tests/...::x PASSED".
        printf 'stopped early; seen: %s' "$(grep -oE '(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) tests/|::[^ ]+ (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)' "$1" |
            grep -oE '(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)' | sort | uniq -c |
            awk '{printf "%s %s, ", $1, $2}')"
    fi
}

banner "setup"
if [[ -d $WHEELS ]] && compgen -G "$WHEELS/*.whl" >/dev/null; then
    timeout 120 "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target "$SITE" "$WHEELS"/*.whl || echo "pip install of $WHEELS failed (rc $?)"
    export PYTHONPATH=$SITE:$PWD
else
    echo "no wheels in '$WHEELS': using the installed packages"
    export PYTHONPATH=$PWD
fi
echo "PYTHONPATH=$PYTHONPATH OUT=$OUT WORK=$WORK"

# ---- 1. versions and devices ----
cat >"$WORK/versions.py" <<'EOF'
import importlib.metadata as md
import platform

import jax

print("python", platform.python_version(), platform.machine())
for name in ("jax", "jaxlib", "jax-cuda13-plugin", "flax", "optax", "orbax-checkpoint", "numpy",
             "tensorflow-datasets", "grain", "ml-collections", "protobuf", "etils"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "not installed")
print("backend", jax.default_backend())
print("devices", jax.devices())
import attn.data, attn.train, benchmarks.sweep  # what the parts import
print("attn imports: ok")
EOF
# shellcheck disable=SC2016 # $0 and $1 are the inner shell's arguments
run_part "versions" 60 "$WORK/versions.log" bash -c '
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader \
        || echo "nvidia-smi: not available"
    "$0" "$1"' "$PYTHON" "$WORK/versions.py"
BACKEND=$(sed -n 's/^backend //p' "$WORK/versions.log")
DEVICE=$(grep -m1 -E 'NVIDIA|devices' "$WORK/versions.log" | cut -c1-120)
echo "$PART_STATUS|backend ${BACKEND:-unknown}; ${DEVICE:-no device line}" >>"$STATUS_FILE"

DRY=${GPU_CHECK_DRY:-}
if [[ -z $DRY ]]; then
    if [[ $BACKEND == gpu ]]; then DRY=0; else DRY=1; fi
fi
if ((DRY)); then
    echo "DRY RUN: tiny sizes (backend '${BACKEND:-unknown}'); no result of it is a measurement"
fi

# ---- 2. the Pallas kernel compiled for the GPU ----
# Tests compile many small programs: 4 processes, each allocating GPU memory as it goes (by
# default each would take 75% of it up front). -vv: one line per test (pyproject adds -q).
# test_chunked.py's parity tests are not run here: their tiles of 4 and head dim 8 are below
# what Triton compiles correctly (on the H200 they ran to wrong values), so they now run in
# Pallas' interpreter on every backend, and pallas_attention refuses such sizes on a GPU.
if ((DRY)); then WORKERS=0; else WORKERS=4; fi
run_part "pallas GPU tests" 110 "$WORK/pallas_gpu_tests.log" env XLA_PYTHON_CLIENT_PREALLOCATE=false \
    "$PYTHON" -m pytest -vv --tb=short -rfE -p no:cacheprovider -n "$WORKERS" \
    tests/kernels/test_pallas_gpu.py
echo "$PART_STATUS|$(pytest_counts "$WORK/pallas_gpu_tests.log")" >>"$STATUS_FILE"

# ---- 3. kernels in bfloat16 against cuDNN ----
# ~120 programs (6 implementations x 2 masks x 2 passes x 5 lengths): compiling them is most of
# the time. Lengths run in this order so that a run cut short still spans 1k to 16k (the tables
# are sorted by length). Every case runs once before timing, so no extra warm-up; 2 rounds:
# the Pallas path's backward pass is the chunked kernel's XLA scan over its 64 x 64 tiles,
# 65536 tile pairs at 16k, seconds per call. dense needs 16 GiB of float32 logits per
# [4, 16, 8192, 8192] pass: up to 64 GiB temporary memory it runs (the GPU has ~139 GiB).
# XLA's matmuls go to cuBLAS, not autotuned Triton GEMMs, to keep compiling short. A
# persistent compilation cache lets "auto" reuse the programs of the implementation it picks.
if ((DRY)); then
    SIZES=(--lengths 128 256 --batch 1 --heads 2 --head-dim 64 --repeats 1 --matmul-sizes 128)
else
    SIZES=(--lengths 1024 4096 16384 2048 8192 --batch 4 --heads 16 --head-dim 128
        --repeats 2 --warmup 0 --matmul-sizes 4096 8192 --max-temp-gib 64)
fi
run_part "attn bench (bfloat16)" 200 "$WORK/bench.log" \
    env JAX_COMPILATION_CACHE_DIR="$WORK/jax_cache" JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
    XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_triton_gemm=false" \
    "$PYTHON" -m attn bench --dtype bfloat16 "${SIZES[@]}" \
    --implementations cudnn jax.nn auto pallas chunked dense --causal no yes \
    --error-rows 32 --baseline cudnn --out "$OUT/bench"
echo "$PART_STATUS|" >>"$STATUS_FILE"

# ---- 4. vmapped sweep programs ----
# reverse: K=64, 8 and 1 trials of its own config (learning rates apart; K=64 first, as it
# matters most), 2 of the K timed one by one and extrapolated (the table's "sequential timed"
# column says so): a trial's whole run (compile, steps, evaluation of the test split, plots,
# checkpoint) is ~10 s, so all 64 would not fit. It takes whatever time the budget has left.
# The data set is generated into $TFDS_DATA_DIR by the warm-up run.
if ((DRY)); then
    SWEEP=(--experiments reverse:smoke --ks 4 1 --steps 4 --sequential-sample 2)
    MQAR=(--experiments mqar:smoke --ks 2 --steps 4 --sequential-sample 1)
else
    SWEEP=(--experiments reverse --ks 64 8 1 --steps 200 --sequential-sample 2)
    MQAR=(--experiments mqar --ks 8 --steps 100 --sequential-sample 2)
fi
run_part "sweep: reverse" 400 "$WORK/sweep.log" \
    "$PYTHON" -m benchmarks.sweep "${SWEEP[@]}" --out "$OUT/sweep.json"
echo "$PART_STATUS|" >>"$STATUS_FILE"
if ((BUDGET - (SECONDS - START) >= 90)); then
    run_part "sweep: mqar" 120 "$WORK/sweep_mqar.log" \
        "$PYTHON" -m benchmarks.sweep "${MQAR[@]}" --out "$OUT/sweep_mqar.json"
    echo "$PART_STATUS|" >>"$STATUS_FILE"
else
    echo "sweep: mqar|skipped (less than 90 s left)|0|" >>"$STATUS_FILE"
fi

# ---- 5. summary ----
{
    echo "# GPU check: $(date -u +%Y-%m-%dT%H:%MZ), $((SECONDS - START)) s$( ((DRY)) && echo ', DRY RUN (tiny sizes)')"
    echo
    echo "| part | status | seconds | result |"
    echo "|---|---|---:|---|"
    awk -F'|' '{printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4}' "$STATUS_FILE"
    for log in "$WORK"/pallas_*_tests.log; do
        if grep -q '^FAILED\|^ERROR' "$log"; then
            echo
            echo "First failures in $(basename "$log"):"
            echo
            grep -E '^(FAILED|ERROR) ' "$log" | head -5 | cut -c1-400 | sed 's/^/    /'
        fi
    done
    echo
    if [[ -f $OUT/bench.md ]]; then
        # The comparison table that --baseline cudnn adds to the report.
        awk '/^Time per call in ms/ {on = 1} on && /^- / {exit} on' "$OUT/bench.md"
    else
        echo "(no bench results)"
    fi
    echo "Sweeps (vmapped / sequential: whole runs, then steady steps):"
    echo
    echo "| experiment | K | steps | sequential timed | vmapped / sequential | steady ratio |"
    echo "|---|---:|---:|---|---:|---:|"
    for log in "$WORK"/sweep.log "$WORK"/sweep_mqar.log; do
        [[ -f $log ]] && grep -E '^\| (reverse|mqar)' "$log" |
            awk -F' \\| ' '{sub(/ \|$/, "", $10); printf "%s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $7, $10}'
    done
} >"$OUT/summary.md"
banner "summary"
cat "$OUT/summary.md"
rm -rf "$WORK"
# Let tee write the last lines before the machine collects $OUT.
exec >&- 2>&-
wait "$TEE_PID" 2>/dev/null
