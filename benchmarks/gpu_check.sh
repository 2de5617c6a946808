#!/usr/bin/env bash
# The GPU check, one command (a few minutes on one GPU; stops at 8):
#
#   bash benchmarks/gpu_check.sh
#
#   1. the CUDA-only tests (pytest -m cuda);
#   2. the training step on CUDA: masked vs dense, the engine vs a plain PyTorch loop (ratio), and the
#      minutes_per_epoch of ResNet18 and ResNet34 at the paper's width for config resources.minutes_per_epoch;
#   3. the graph metrics and a PAGS candidate on CUDA;
#   3b. K masked ResNet18s and ResNet34s (width 64, batch 128, bf16, channels-last, ERK 0.01) trained one after
#      another vs fused into one model (benchmarks/fused_train.py), for config train.members / mode and
#      resources.fused_speedup;
#   4. a short CIFAR-shaped run of the workflow with device cuda (config/gpu_check.yaml, target table1) on a
#      synthetic CIFAR-10 tree, every GPU job on its own GPU;
#
# then one summary table (Markdown) for README's Performance section; full logs in results/gpu_check/logs.
# Without a usable GPU it says why in one line and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
BIN="$(dirname "$PY")"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
LOGS=results/gpu_check/logs
DEADLINE=$((SECONDS + 480))

problem=$("$PY" -c '
import os, platform, torch
from fullspectrum import devices
print(devices.cuda_problem(torch.version.cuda, devices.driver_version(), os.environ.get("CUDA_VISIBLE_DEVICES"),
                           torch.cuda.is_available(), platform.node()) or "")')
if [ -n "$problem" ]; then
    echo "gpu_check: no usable GPU here, nothing checked: $problem"
    exit 0
fi

rm -rf results/gpu_check
mkdir -p "$LOGS"
left() { echo $((DEADLINE - SECONDS > 10 ? DEADLINE - SECONDS : 10)); }
step() {  # step NAME COMMAND...: run with what is left of the 8 minutes, log to $LOGS/NAME.log
    local name=$1
    shift
    echo "== $name: $*"
    local start=$SECONDS
    if timeout "$(left)" "$@" >"$LOGS/$name.log" 2>&1; then
        echo "   done in $((SECONDS - start)) s"
    else
        echo "   FAILED or out of time (exit $?) after $((SECONDS - start)) s; see $LOGS/$name.log"
        tail -n 5 "$LOGS/$name.log"
    fi
    STEP_SECONDS=$((SECONDS - start))
}
field() { grep -m1 "$2" "$LOGS/$1.log" 2>/dev/null | sed -E "s|.*$3.*|\1|" || true; }

gpus=$(ls /dev/nvidia[0-9]* 2>/dev/null | wc -l)
gpu_name=$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))')
step cuda-tests "$PY" -m pytest -q -m cuda -p no:cacheprovider tests
step train18 "$PY" benchmarks/train_step.py --device cuda --width 64 --steps 20 --rounds 3 --plain
step train34 "$PY" benchmarks/train_step.py --device cuda --width 64 --steps 20 --rounds 3 --model resnet34
step graph "$PY" benchmarks/graph_metrics.py --device cuda --repeats 3
step pags "$PY" benchmarks/pags.py --device cuda --population 4
step fused18 "$PY" benchmarks/fused_train.py --device cuda --width 64 --batch 128 --bf16 --steps 5 --rounds 3
step fused34 "$PY" benchmarks/fused_train.py --device cuda --width 64 --batch 128 --bf16 --steps 5 --rounds 3 \
    --model resnet34 --no-vmap
step data "$PY" benchmarks/synthetic_cifar.py --root results/gpu_check/data --train 5000 --test 1000
step workflow env PATH="$BIN:$PATH" "$BIN/snakemake" table1 --configfile config/gpu_check.yaml --cores all \
    --resources "gpu=$((gpus > 0 ? gpus : 1))"
workflow_seconds=$STEP_SECONDS

jobs=$(grep -cE "^Finished jobid" "$LOGS/workflow.log" || true)
devices_used=$(find results/gpu_check -name metrics.json -exec grep -ho '"device": "[^"]*"' {} + 2>/dev/null |
               sort -u | sed 's/"device": //' | paste -sd, - || true)
cat <<EOF

## GPU check: $gpu_name, torch $("$PY" -c 'import torch; print(torch.__version__)'), $(date -u +%F)

| what | measured | command |
|---|---|---|
| CUDA-only tests | $(tail -n 1 "$LOGS/cuda-tests.log") | \`pytest -m cuda\` |
| ResNet18 width 64, batch 128: dense / masked step | $(field train18 "dense step" ' ([0-9]+ img/s)') / $(field train18 "masked step" ' ([0-9]+ img/s)') | \`benchmarks/train_step.py --device cuda --width 64 --plain\` |
| engine vs plain PyTorch loop (DataLoader, fp32) | **$(field train18 "throughput =" '= ([0-9.]+x)')**; mask overhead $(field train18 "mask overhead" '= ([0-9.]+)') | same |
| minutes_per_epoch (CIFAR, 50,000 images): resnet18 / resnet34 | $(field train18 "minutes_per_epoch" ': ([0-9.]+) .*') / $(field train34 "minutes_per_epoch" ': ([0-9.]+) .*') | \`benchmarks/train_step.py --device cuda --width 64 [--model resnet34]\` |
| graph metrics, ResNet18 width 64, ERK 0.05, on CUDA | $(field graph "model_metrics   :" ': *([0-9.]+ s) wall.*') vs $(field graph "straightforward :" ': *([0-9.]+ s) wall.*') for eigsh on the CPU; $(field graph "agreement" 'difference (.*) over.*') apart | \`benchmarks/graph_metrics.py --device cuda\` |
| PAGS candidate, ResNet18 width 64, SNIP: scoring / everything else | $(field pags "PaI scoring per candidate" 'candidate +([0-9.]+ s).*') / $(field pags "everything else per candidate" 'candidate +([0-9.]+ s).*') | \`benchmarks/pags.py --device cuda\` |
| K fused vs K in turn, ResNet18 / ResNet34 width 64, bf16 | $(field fused18 "suggested" 'suggested (.*)') / $(field fused34 "suggested" 'suggested (.*)') | \`benchmarks/fused_train.py --device cuda --width 64 --bf16 [--model resnet34]\` (tables in $LOGS/fused18.log, fused34.log) |
| workflow \`table1\` of config/gpu_check.yaml, synthetic CIFAR-10, device cuda, $gpus GPU(s) | $jobs jobs in ${workflow_seconds} s; trained on ${devices_used:-?} | \`snakemake table1 --configfile config/gpu_check.yaml\` |
| the whole check | $SECONDS s | \`bash benchmarks/gpu_check.sh\` |
EOF
