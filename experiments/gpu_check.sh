#!/usr/bin/env bash
# The checks that need the GPU machine, in two parts of about 5 minutes each (one device call may
# run 10 minutes; run both parts in one call only when the lease has time to rerun one):
#   b1:    B1 (pfl-research's CIFAR-10 shape) for batched, batched+compile, sequential and pfl-research
#          itself (where .gpu/pfl-site holds it), 100 rounds each;
#   paper: seconds per round of every paper-sized preset (FedLabel, FedLoGe, pFedPG), a few rounds each,
#          so that a later session can plan the full runs (800, 500 and 100 rounds) inside its budget.
#
# Here, once:   bash ../shared/tools/gpu-wheels.sh && mkdir -p .gpu && cp ../shared/data/cifar10-jpeg.tar.gz .gpu/
#               echo /.gpu/ >> .git/info/exclude
#               pip install --target .gpu/pfl-site --no-deps pfl==0.6.0 dp-accounting prv-accountant multiprocess \
#                   dill absl-py dm-tree mpmath attrs "wheel<0.46"        (16 MB; the pfl row of B1)
# Device calls: bash experiments/gpu_check.sh b1        then        bash experiments/gpu_check.sh paper
#               each with carry [".whl", ".gpu"] and timeout_s 480 (b1) and 420 (paper)
# Results come back under $OUT: gpu.txt, b1.md, paper.md and the logs. On a CPU (a dry run of the
# script itself): SKIP_INSTALL=1 PYTHON=.venv/bin/python ROUNDS_B1=2 ROUNDS_PAPER=1 PRESETS=fedloge-paper-cifar10-lt OUT=/tmp/gc bash experiments/gpu_check.sh
set -uo pipefail
PARTS=${*:-b1 paper}
OUT=${OUT:-/tmp/gpu-check}
ROUNDS_B1=${ROUNDS_B1:-100}
ROUNDS_PAPER=${ROUNDS_PAPER:-3}
PRESETS=${PRESETS:-fedlabel-paper-cifar10 fedloge-paper-cifar10-lt pfedpg-paper-cifar10}
DATA=${DATA:-.gpu/cifar10-jpeg.tar.gz}
CACHE=${CACHE:-/tmp/gpu-check-cache}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
if [ -z "${SKIP_INSTALL:-}" ]; then  # the device has torch, timm and numpy; flwr, hydra and friends come as wheels
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/* \
    > "$OUT/install.log" 2>&1 || { tail -5 "$OUT/install.log"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
fi
FLOWERBED=("$PYTHON" -m flowerbed.simulations.cli)  # an array, not a function: `timeout` runs programs only
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU"
  "$PYTHON" -c "import torch, flwr; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'flwr', flwr.__version__)"
  nproc; uptime; } > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

# b1: every engine in one run; the pfl row where pfl-research came along (.gpu/pfl-site)
if [[ " $PARTS " == *" b1 "* ]]; then
  engines=batched,batched+compile,sequential
  if [ -d .gpu/pfl-site ]; then engines=$engines,pfl; fi
  PYTHONPATH=${PYTHONPATH:-}:$PWD/.gpu/pfl-site timeout 400 "${FLOWERBED[@]}" bench b1 --rounds "$ROUNDS_B1" --engines "$engines" \
    --out /tmp/gpu-check-b1 > "$OUT/b1.log" 2>&1
  cp /tmp/gpu-check-b1/bench.md "$OUT/b1.md" 2>/dev/null && cat "$OUT/b1.md" || tail -20 "$OUT/b1.log"
fi
[[ " $PARTS " == *" paper "* ]] || exit 0

# paper: s/round after the first round (which pays for building the model); CIFAR-10 is decoded once first
timeout 150 "${FLOWERBED[@]}" partitions experiment=fedlabel-paper-cifar10 dataset.path="$DATA" dataset.cache_dir="$CACHE" \
  --out "$OUT/partitions.png" > "$OUT/decode.log" 2>&1 || tail -5 "$OUT/decode.log"
echo "| preset | rounds run | s/round (median after the first) | accuracy after the last |" > "$OUT/paper.md"
echo "|---|---|---|---|" >> "$OUT/paper.md"
for preset in $PRESETS; do
  extra=()
  [ "$preset" = pfedpg-paper-cifar10 ] && extra=(model.weights=random)  # no ImageNet weights offline: timing only
  timeout 75 "${FLOWERBED[@]}" run experiment="$preset" rounds="$ROUNDS_PAPER" evaluate.every="$ROUNDS_PAPER" dataset.path="$DATA" \
    dataset.cache_dir="$CACHE" output.dir="/tmp/gpu-check-paper/$preset" overwrite=true "${extra[@]}" \
    > "$OUT/$preset.log" 2>&1
  "$PYTHON" - "$preset" "/tmp/gpu-check-paper/$preset/metrics.jsonl" >> "$OUT/paper.md" <<'EOF'
import json, statistics, sys
from pathlib import Path
preset, path = sys.argv[1], Path(sys.argv[2])
rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
times = [r["time/round_s"] for r in rows if "time/round_s" in r]
acc = next((r[k] for r in reversed(rows) for k in ("global/acc", "personal/acc") if k in r), float("nan"))
median = statistics.median(times[1:] or times) if times else float("nan")
print(f"| {preset} | {len(times)} | {median:.2f} | {acc:.3f} |")
EOF
done
cat "$OUT/paper.md"
