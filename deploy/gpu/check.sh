#!/usr/bin/env bash
# Every check that needs a CUDA GPU, as one prepared script for a lent GPU machine. Never part of the tests.
#
#   deploy/gpu/check.sh            # results under $OUT (else runs/gpu-check): log.txt and results.tar.gz
#
# 1. the `gpu`-marked tests (fp16 autocast + GradScaler on CUDA);
# 2. VQA: the three fusions (concat, dma, hffn; relation answer head) trained side by side on the GPU
#    for the same number of steps, sized by a short probe to fit VQA_SECONDS, each evaluated on the
#    1,000 held-out scenes (seed 10001) — the figures in docs/VQA.md;
# 3. `inspector bench model` of the shipped crack model on CUDA (fp32 and fp16 autocast).
#
# The machine has the GPU build of torch but no network: the project's other dependencies travel as
# wheels in .wheels-gpu/ or .whl/ (see docs/BENCHMARKS.md, "GPU checks") and are installed to /tmp/site.
set -uo pipefail
out=${OUT:-runs/gpu-check}
work=$out/work
mkdir -p "$work"
budget=${VQA_SECONDS:-300}  # seconds of side-by-side VQA training
batch=${VQA_BATCH:-256}
device=${CHECK_DEVICE:-cuda}  # cpu only to try the script itself on a machine without a GPU
stage() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
{
stage "environment"
for wheels in ${CHECK_WHEELS-.whl .wheels-gpu}; do
  if compgen -G "$wheels/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheels"/*.whl
    export PYTHONPATH=/tmp/site
  fi
done
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1
if ! command -v inspector > /dev/null; then  # not installed: a wrapper on PATH (a shell function would not run under timeout)
  mkdir -p /tmp/gpu-check-bin
  printf '#!/bin/sh\nexec python3 -c "import sys; from workers.cli import app; sys.argv[0] = \\"inspector\\"; app()" "$@"\n' \
    > /tmp/gpu-check-bin/inspector
  chmod +x /tmp/gpu-check-bin/inspector
  export PATH=/tmp/gpu-check-bin:$PATH
fi
if [[ $device == cuda ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print(torch.__version__, torch.cuda.get_device_name(0))' \
    || exit 1
fi
synth=
if [[ ! -d data/heldout-default ]]; then  # the documented held-out seed, made while the GPU trains
  inspector synth --out data/heldout-default --count 20 --preset default --seed 9001 --workers 3 > "$work/synth.log" 2>&1 &
  synth=$!
fi

stage "gpu tests"
timeout 120 python3 -m pytest -m gpu -p no:cacheprovider -q tests/mla 2>&1 | tail -5

stage "vqa probe: 150 steps of each fusion side by side"
train() {  # fusion steps name [extra options]
  inspector vqa train --fusion "$1" --steps "$2" --batch "$batch" --device "$device" --amp --workers 4 --no-progress \
    --out "$work/$3-$1.pt" --run-dir "$work/run-$3-$1" --json "${@:4}" > "$work/$3-$1.json" 2> "$work/$3-$1.err"
}
start=$(date +%s.%N)
pids=()
for f in concat dma hffn; do train $f 150 probe --eval-scenes 20 & pids+=($!); done
wait "${pids[@]}"
probe=$(python3 -c "import time; print(round(time.time() - $start, 1))")
# seconds per step of the slowest fusion between steps 50 and 150 (start-up and evaluation left out)
per_step=$(python3 - "$work" << 'PY'
import json, sys
from pathlib import Path
worst = 0.0
for fusion in ("concat", "dma", "hffn"):
    path = Path(sys.argv[1]) / f"run-probe-{fusion}" / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    wall = {r["step"]: r["wall_s"] for r in rows if r.get("split") == "train"}
    if 50 in wall and 150 in wall:
        worst = max(worst, (wall[150] - wall[50]) / 100)
print(worst or 1.0)
PY
)
steps=$(python3 -c "print(max(300, int(0.9 * $budget / $per_step) // 100 * 100))")
echo "probe took ${probe}s; ${per_step}s per step side by side; training $steps steps of batch $batch per fusion"
for f in concat dma hffn; do tail -c 300 "$work/probe-$f.err"; done

stage "vqa training: $steps steps each, side by side, evaluated on 1,000 held-out scenes"
pids=()
for f in concat dma hffn; do
  train $f "$steps" vqa --eval-scenes 1000 --eval-every $((steps / 4)) --time-limit $((budget * 3 / 2)) &
  pids+=($!)
done
wait "${pids[@]}"
for f in concat dma hffn; do
  python3 -c "import json, sys; d = json.load(open(sys.argv[1])); print(sys.argv[2], d['steps'], d['seconds'], \
round(d['heldout']['overall'], 4), {k: round(v, 4) for k, v in d['heldout']['by_type'].items()})" "$work/vqa-$f.json" $f \
    || tail -20 "$work/vqa-$f.err"
done

stage "crack model on CUDA"
[[ -z $synth ]] || wait "$synth" || tail -5 "$work/synth.log"
timeout 90 inspector bench model --models inspector/models/crack-concat.pt --data data/heldout-default --limit 10 \
  --device "$device" --backends torch --batches 1,8 --repeats 20 --out "$work/bench-fp32" --json > "$work/bench-fp32.json" \
  2> "$work/bench-fp32.err" || tail -5 "$work/bench-fp32.err"
timeout 90 inspector bench model --models inspector/models/crack-concat.pt --data data/heldout-default --limit 10 \
  --device "$device" --amp --backends torch --batches 1,8 --repeats 20 --out "$work/bench-amp" --json > "$work/bench-amp.json" \
  2> "$work/bench-amp.err" || tail -5 "$work/bench-amp.err"
stage "done"
} 2>&1 | tee "$out/log.txt"
rm -rf "$work"/run-*/checkpoints
tar -czf "$out/results.tar.gz" -C "$work" . && ls -la "$out"
