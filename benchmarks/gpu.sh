#!/usr/bin/env bash
# Every GPU figure of docs/benchmarks.md in one command, within a wall-clock budget (sections in this order, the
# most wanted first, so a budget cut costs the last ones):
#   1. the `cuda` tests (device == CPU for every engine path, the device-resident regression, memory-sized passes
#      and out-of-memory halving, GPU claiming; bf16 vs fp32 margins on the paper's models);
#   2. regression at Setup A size (M 50,000, C 2,304, N 10,000) against minibatch SAGA, end to end from a host
#      store (transfers counted) and from device tensors, Cholesky and eigendecomposition;
#   3. regression at Setup B size (M 100,000, C 22,720, N 50,000), host chunks -> attributions, peak GPU memory;
#   4. mask sampling at n = 10,000, ours (K = 1, 4, and the engine's own plan from measured memory) vs the
#      re-implemented authors' loop, for the CIFAR ResNet, ResNet-50 and ViT-B/16 (bf16);
#   5. the same for ResNet-50 under torch.compile, with and without CUDA graphs;
#   6. mask sampling at n = 64 (K = 1, 8, 32 and the engine's plan);
#   7. the default preset's Fig. 2 chain through Snakemake on the GPU, compared with a CPU run;
#   8. memory_plan for ViT-B/16 against what the GPU holds.
#
#   bash benchmarks/gpu.sh OUTDIR [--cpu-reference results/fig2/summary.csv]    # on a GPU machine
#   bash benchmarks/gpu.sh --tiny OUTDIR                                         # CPU rehearsal (tests)
#
# Each section runs under its own time limit, cut to what is left of GPU_BUDGET_S (default 480 s), so a
# slow section costs only itself; the sections run in the order above. OUTDIR gets summary.txt (the
# environment and the tail of every section) and logs.tar.gz (every section's whole log, the Fig. 2
# summary tables). PYTHON (default python3) must have torch; snakemake and captum are needed by 1 and 7.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TINY=0
REF=""
OUTDIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tiny) TINY=1 ;;
    --cpu-reference) REF=$(realpath "$2"); shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) OUTDIR=$1 ;;
  esac
  shift
done
[ -n "$OUTDIR" ] || { echo "usage: bash benchmarks/gpu.sh [--tiny] OUTDIR [--cpu-reference CSV]" >&2; exit 2; }
mkdir -p "$OUTDIR" || exit 2
OUTDIR=$(realpath "$OUTDIR")
PY=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/coar-gpu.XXXXXX")
LOGS=$WORK/logs
mkdir -p "$LOGS"
export PYTHONPATH=$ROOT/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
deadline=$(( $(date +%s) + ${GPU_BUDGET_S:-480} ))
SUMMARY=$OUTDIR/summary.txt
: > "$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }

# section NAME LIMIT_S TAIL_LINES COMMAND...: run with a limit cut to the time left, log to logs/NAME.log
section() {
  local name=$1 limit=$2 lines=$3 left rc t0
  shift 3
  left=$(( deadline - $(date +%s) ))
  (( limit > left )) && limit=$left
  if (( limit < 15 )); then say "== $name: SKIPPED (${left}s of the budget left)"; return; fi
  t0=$(date +%s)
  (cd "$ROOT" && timeout -k 10 "$limit" "$@") > "$LOGS/$name.log" 2>&1
  rc=$?
  local status="rc $rc"
  (( rc == 124 || rc == 137 )) && status="TIMED OUT at ${limit}s"
  say "== $name: $status, $(( $(date +%s) - t0 )) s (limit ${limit}s)"
  tail -n "$lines" "$LOGS/$name.log" | tee -a "$SUMMARY"
}

if (( TINY )); then
  DEV=cpu
  SAMPLING_64=(--quick --engine)
  SAMPLING_10K=(--quick --models cifar_resnet --engine)
  SAMPLING_COMPILE=(--quick --models cifar_resnet --compile default reduce-overhead)
  SETUP_A=(--quick)
  SETUP_B=(--m 1200 --c 300 --n 100 --chunk 512)
  PRESET=config/test.yaml
  # the same command line as on the GPU, with the CPU's values (the default profile's: 0 = the engine's choice)
  RESOURCES=(--set-resources sample_shard:batch_size=0 sample_shard:masks_per_pass=0
             baseline:batch_size=0 baseline:masks_per_pass=0)
else
  DEV=cuda
  SAMPLING_64=(--n 64 --masks 64 --masks-authors 8 --masks-per-pass 1 8 32 --engine)
  SAMPLING_10K=(--n 10000 --masks 4 --masks-authors 2 --masks-per-pass 1 4 --engine)
  SAMPLING_COMPILE=(--n 10000 --masks 4 --masks-authors 1 --masks-per-pass 1 --models resnet50 --channels-last
                    --compile default reduce-overhead)
  SETUP_A=(--m 50000 --c 2304 --n 10000)
  SETUP_B=(--m 100000 --c 22720 --n 50000 --chunk 32768)
  PRESET=config/config.yaml
  # the engine's choice, as on the CPU: on a GPU its rows per pass come from measured memory
  RESOURCES=(--set-resources sample_shard:batch_size=0 sample_shard:masks_per_pass=0
             baseline:batch_size=0 baseline:masks_per_pass=0)
fi

say "coar GPU benchmarks ($( ((TINY)) && echo 'tiny CPU rehearsal' || echo 'GPU run')), $(date -u +%FT%TZ)"
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD 2>/dev/null || commit="$commit + uncommitted changes"
say "commit: ${COAR_COMMIT:-$commit}"
"$PY" - <<'EOF' 2>&1 | tee -a "$SUMMARY"
import platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device: {p.name}, {p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs, "
          f"compute capability {p.major}.{p.minor}")
else:
    print("device: no CUDA GPU (CPU)")
EOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm \
  --format=csv,noheader 2>&1 | sed 's/^/nvidia-smi: /' | tee -a "$SUMMARY"

PEAK=989  # dense bf16 TFLOP/s of an H100 SXM / H200 (the datasheet figure)
section cuda-tests 100 40 "$PY" -m pytest -q -m cuda -rs -s -p no:cacheprovider tests/test_cuda.py \
  tests/test_gram_device.py tests/test_engine_memory.py tests/test_gpus.py
section regression-setup-A 60 30 "$PY" benchmarks/bench_saga.py --device "$DEV" "${SETUP_A[@]}"
section regression-setup-B 100 16 "$PY" benchmarks/bench_regression.py --stream --device "$DEV" "${SETUP_B[@]}"
section sampling-n10000 120 14 "$PY" benchmarks/bench_sampling.py --device "$DEV" --peak-tflops $PEAK \
  "${SAMPLING_10K[@]}"
section sampling-compile 90 8 "$PY" benchmarks/bench_sampling.py --device "$DEV" --peak-tflops $PEAK \
  "${SAMPLING_COMPILE[@]}"
section sampling-n64 60 18 "$PY" benchmarks/bench_sampling.py --device "$DEV" --peak-tflops $PEAK "${SAMPLING_64[@]}"

# snakemake on PATH, else beside PY, else as a module of PY (wheels unpacked onto PYTHONPATH have no launcher)
SNAKEMAKE=$(command -v snakemake || echo "$(dirname "$(command -v "$PY")")/snakemake")
[ -x "$SNAKEMAKE" ] || SNAKEMAKE="$(command -v "$PY") -m snakemake"
cat > "$WORK/compare.py" <<'EOF'
"""Print the GPU run's Fig. 2 summary and, given a CPU run's, the largest difference per numeric column."""
import sys
import pandas as pd
gpu = pd.read_csv(sys.argv[1])
print(gpu.to_string(index=False))
if len(sys.argv) > 2 and sys.argv[2]:
    cpu = pd.read_csv(sys.argv[2])
    num = [c for c in gpu.columns if pd.api.types.is_float_dtype(gpu[c])]
    keys = [c for c in gpu.columns if c not in num]
    assert gpu[keys].equals(cpu[keys]), "the GPU and CPU summaries have different rows"
    d = (gpu[num] - cpu[num]).abs()
    print("max |GPU - CPU| per column (same seeds): " + ", ".join(f"{c} {d[c].max():.4f}" for c in num))
EOF
cat > "$WORK/fig2.sh" <<EOF
set -e
$SNAKEMAKE figures/fig2.pdf --cores all --scheduler greedy --configfile="$ROOT/$PRESET" \\
  --directory "$WORK/fig2" ${RESOURCES[*]}
grep -h "^sampling on\|^engine:" "$WORK"/fig2/logs/*/masks/train/shard-*.log | sort | uniq -c
"$PY" "$WORK/compare.py" "$WORK/fig2/results/fig2/summary.csv" "$REF"
EOF
section fig2-chain 120 70 bash "$WORK/fig2.sh"
cp "$WORK"/fig2/results/fig2/*.csv "$LOGS/" 2>/dev/null

section memory-plan-vit 20 12 "$PY" - <<'EOF'
import torch
from coar.regression import memory_plan
dev = "cuda" if torch.cuda.is_available() else "cpu"
total = torch.cuda.get_device_properties(0).total_memory if dev == "cuda" else None
free = torch.cuda.mem_get_info()[0] if dev == "cuda" else None
print(f"GPU memory: {total / 2**30:.1f} GiB total, {free / 2**30:.1f} GiB free" if total else "no GPU")
# ViT-B/16: 82,944 components (the paper's Setup C: 200,000 masks, 5,000 examples)
for m, n in ((200_000, 5_000), (50_000, 5_000), (20_000, 5_000)):
    plan = memory_plan(m, 82_944, n)
    form = plan["chosen"]
    arrays = {k: v for k, v in plan[form].items() if k != "total"}
    line = (f"m {m:,}, C 82,944, N {n:,}: {form}, {plan[form]['total'] / 2**30:.1f} GiB "
            f"({', '.join(f'{k} {v / 2**30:.1f}' for k, v in arrays.items())})")
    if total:
        held = []
        try:  # does the GPU hold the chosen form's arrays at once?
            for k, v in arrays.items():
                held.append(torch.empty(v, dtype=torch.uint8, device=dev))
            line += ": fits on the GPU"
        except torch.OutOfMemoryError:
            line += f": does NOT fit on the GPU (failed at {k})"
        del held
        torch.cuda.empty_cache()
    print(line)
EOF

tar -czf "$OUTDIR/logs.tar.gz" -C "$WORK" logs
say "== done in budget: $(( deadline - $(date +%s) )) s of ${GPU_BUDGET_S:-480} s left; logs in $OUTDIR/logs.tar.gz"
rm -rf "$WORK"
