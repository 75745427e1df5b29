#!/usr/bin/env bash
# The GPU variant of `inspector bench model`, as one prepared script for a lent GPU machine.
#
#   deploy/gpu/bench.sh MODELS [OUT]     # MODELS: comma-separated .pt files (unpruned first, then pruned widths)
#
# Installs the project into a fresh venv if needed, checks that torch sees CUDA, generates a small
# held-out set (seed 9001, the documented held-out seed), and times every model on torch CUDA (fp32
# and AMP fp16) and onnxruntime (CUDA provider if onnxruntime-gpu is installed, else CPU). Writes
# bench JSON files under OUT (default: $OUT, else runs/gpu-bench). Never part of the test suite.
set -euo pipefail
models=${1:?usage: bench.sh MODELS [OUT]}
out=${2:-${OUT:-runs/gpu-bench}}
mkdir -p "$out"
if [[ ! -x .venv/bin/inspector ]]; then
  python3 -m venv .venv && .venv/bin/pip install -q -e "."
fi
source .venv/bin/activate
python - <<'PY'
import torch, sys
if not torch.cuda.is_available():
    sys.exit("no CUDA device visible to torch: this script is for a GPU machine")
print("GPU:", torch.cuda.get_device_name(0), "torch", torch.__version__, "CUDA", torch.version.cuda)
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
[[ -d data/heldout-default ]] || inspector synth --out data/heldout-default --count 50 --preset default --seed 9001 --workers 4
inspector bench model --models "$models" --data data/heldout-default --limit 50 --device cuda \
  --backends torch,onnxruntime --batches 1,8 --repeats 50 --out "$out/fp32" --json > "$out/fp32.json"
inspector bench model --models "$models" --data data/heldout-default --limit 50 \
  --device cuda --amp --backends torch --batches 1,8 --repeats 50 --out "$out/amp" --json > "$out/amp.json"
echo "wrote $out/fp32.json and $out/amp.json"
