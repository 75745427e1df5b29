#!/usr/bin/env bash
# The crack model on a GPU, as one prepared script for a lent GPU machine (under 8 minutes). Never part of the tests.
#
#   deploy/gpu/bench.sh [MODELS]     # default: the shipped default model and its pruned widths
#
# Writes under $OUT (default runs/gpu-bench):
#   model.json   `inspector bench model` on CUDA: torch fp32, onnxruntime CUDA fp32, TensorRT (onnxruntime's
#                TensorRT provider) fp32 — batch 1, 8 and 32, MP/s and latency, parity at load per row;
#   half.json    the same in half precision: torch fp16 autocast, TensorRT fp16;
#   step.json    `inspector bench step` on CUDA: the whole worker step (decode, register, tiled model,
#                measure) in MP/s, the same figure as on the CPU;
#   gpu.txt      the card, driver and versions.
# BENCH_DEVICE=cpu runs the same commands on a CPU (TensorRT rows left out) to try the script itself.
# The GPU machine has no network: the project's other dependencies travel as wheels in .whl/ (see
# deploy/gpu/check.sh, docs/BENCHMARKS.md "GPU checks").
set -euo pipefail
models=${1:-crack-concat.pt}
out=${OUT:-runs/gpu-bench}
device=${BENCH_DEVICE:-cuda}
mkdir -p "$out"
for wheels in ${BENCH_WHEELS-.whl .wheels-gpu}; do
  if compgen -G "$wheels/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheels"/*.whl
    export PYTHONPATH=/tmp/site
  fi
done
if [[ -x .venv/bin/inspector ]]; then
  export PATH=$PWD/.venv/bin:$PATH
elif ! command -v inspector > /dev/null; then  # not installed: a wrapper on PATH (a shell function would not run under timeout)
  export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
  mkdir -p /tmp/gpu-bench-bin
  printf '#!/bin/sh\nexec python3 -c "import sys; from workers.cli import app; sys.argv[0] = \\"inspector\\"; app()" "$@"\n' \
    > /tmp/gpu-bench-bin/inspector
  chmod +x /tmp/gpu-bench-bin/inspector
  export PATH=/tmp/gpu-bench-bin:$PATH
fi
export INSPECTOR__INFERENCE__CACHE_DIR=$out/onnx PYTHONUNBUFFERED=1
# model names become the shipped files
files=$(python3 - "$models" <<'PY'
import sys
from inspector.model import shipped_model_path
names = [m.strip() for m in sys.argv[1].split(",") if m.strip()]
print(",".join(n if "/" in n else str(shipped_model_path(n.removesuffix(".pt"))) for n in names))
PY
)
backends=torch,onnxruntime
if [[ $device == cuda* ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
  python3 -c 'import torch, onnxruntime as o; assert torch.cuda.is_available(), "no CUDA device"; print(torch.__version__, torch.cuda.get_device_name(0), "onnxruntime", o.__version__, o.get_available_providers())' | tee -a "$out/gpu.txt"
  if python3 -c 'import onnxruntime as o, sys; sys.exit("TensorrtExecutionProvider" not in o.get_available_providers())'; then
    backends=$backends,tensorrt
  else
    echo "onnxruntime has no TensorRT provider here: TensorRT rows left out" | tee -a "$out/gpu.txt"
  fi
fi
echo "models: $files; backends: $backends; device: $device"
timeout 200 inspector bench model --models "$files" --device "$device" --backends "$backends" --batches 1,8,32 \
  --repeats 20 --json > "$out/model.json"
half_backends=torch${backends#torch,onnxruntime}
timeout 120 inspector bench model --models "$files" --device "$device" --backends "$half_backends" --amp \
  --batches 1,8,32 --repeats 20 --json > "$out/half.json"
timeout 120 inspector bench step --models "${files%%,*}" --device "$device" --backends onnxruntime,torch --lanes 1,2 \
  --captures 16 --repeats 3 --json > "$out/step.json"
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
for name in ("model", "half"):
    for row in json.load(open(f"{out}/{name}.json"))["rows"]:
        cells = [f"b{b} {row[f'batch{b}']['median_ms']:.2f} ms {row[f'batch{b}']['megapixels_per_s']:.0f} MP/s" for b in (1, 8, 32)]
        print(name, row["model"], row["backend"], *cells, "parity", row.get("parity_max_abs_diff"))
for row in json.load(open(f"{out}/step.json"))["rows"]:
    print("step", row["model"], row["backend"], "lanes", row["lanes"], f"{row['megapixels_per_s']:.1f} MP/s")
PY
echo "wrote $out/model.json, $out/half.json, $out/step.json"
