#!/usr/bin/env bash
# The crack-model training recipe (docs/BENCHMARKS.md, "Detection you can sign off") as one prepared
# script: generates the training and validation folders if missing, then trains SEEDS seeds of the
# recipe and picks the shipped one on validation. Runs on a lent GPU machine (DEVICE=cuda) or, slowly,
# on the CPU (DEVICE=cpu). Never part of the test suite.
#
#   deploy/gpu/train-crack.sh [OUT]          # env: DEVICE=cuda|cpu STEPS=… SEEDS="0 1 2" INIT=model.pt LR=…
#
# Recipe 4 (the shipped crack-concat, version 4): the unshuffle network (space-to-depth stem,
# pixel-shuffle decoder; `inspector train --arch unshuffle`, the default) from scratch, 12000 steps at
# lr 3e-3 with capture variation (on by default), 45% crack / 35% distractor tiles, then keep the 0.5
# pixel threshold (unbiased widths) and choose the verdict rules on validation. On the 2-core CPU one
# seed takes about 52 min (DEVICE=cpu SEEDS=0). INIT=model.pt fine-tunes a model instead (recipe 3
# fine-tuned the recipe-2 network from git 897dda1 for 5000 steps at lr 1e-3 with --arch pyramid).
#
# Seeds >= 9000 are held out: nothing here generates or reads them.
set -euo pipefail
out=${1:-${OUT:-runs/recipe4}}
device=${DEVICE:-cuda}
steps=${STEPS:-12000}
seeds=${SEEDS:-"0 1 2"}
mkdir -p "$out"
if [[ ! -x .venv/bin/inspector ]]; then
  python3 -m venv .venv && .venv/bin/pip install -q -e "."
fi
source .venv/bin/activate
if [[ $device == cuda* ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
fi

synth() {  # folder count preset seed mm_per_px size
  [[ -f data/$1/.done-$4 ]] && return
  inspector synth --out "data/$1" --count "$2" --preset "$3" --seed "$4" --mm-per-px "$5" --size "$6" \
    --workers "$(nproc)" --json > /dev/null
  touch "data/$1/.done-$4"
}
synth train 400 default 1 0.05 1024
synth train 600 hard 3 0.05 1024
synth train 150 default 11 0.1 512
synth train 250 hard 13 0.1 512
synth val 30 default 2 0.05 1024
synth val 30 hard 5 0.05 1024
synth val 20 default 12 0.1 512
synth val 20 hard 14 0.1 512

init=()
[[ -n ${INIT:-} ]] && init=(--init "$INIT")
for seed in $seeds; do
  inspector train --data data/train --val data/val --out "$out/crack-concat-s$seed.pt" --fusion concat \
    --steps "$steps" --lr "${LR:-3e-3}" --batch "${BATCH:-8}" --crack-fraction 0.45 --distractor-fraction 0.35 \
    --seed "$seed" --device "$device" --no-progress "${init[@]}" | tee "$out/train-s$seed.log"
  inspector threshold --model "$out/crack-concat-s$seed.pt" --val data/val --pixel-threshold 0.5 \
    | tee -a "$out/train-s$seed.log"
done
echo "trained: $(ls "$out"/*.pt); pick the shipped one by its validation figures (model cards), never held-out ones"
