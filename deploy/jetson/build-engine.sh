#!/usr/bin/env bash
# Build a TensorRT engine from an exported crack model (`inspector export --model M.pt` -> M.onnx + M.onnx.json).
#
#   deploy/jetson/build-engine.sh M.onnx fp16                 # -> M.engine (+ M.engine.json)
#   deploy/jetson/build-engine.sh M.onnx int8 CALIB_CACHE     # INT8 with a calibration cache
#
# Runs on the target (Jetson with JetPack, or a GPU server with TensorRT): an engine is specific to the
# GPU and the TensorRT version that built it. UNTESTED on the project's CI machine (no GPU, no TensorRT).
# Shapes: batch 1-8, tiles 576x576 visible / 144x144 IR (the default inference tile); change the
# profile below if you change `inference.tile` or `inference.batch_size`.
set -euo pipefail

onnx=${1:?usage: build-engine.sh MODEL.onnx fp16|int8 [CALIBRATION_CACHE]}
precision=${2:-fp16}
calib=${3:-}
engine=${onnx%.onnx}.engine
trtexec=${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}
[[ -x $trtexec ]] || { echo "trtexec not found: install TensorRT (JetPack ships it in /usr/src/tensorrt/bin)" >&2; exit 2; }
[[ -f $onnx.json ]] || { echo "$onnx.json missing: export with \`inspector export\`, which writes it" >&2; exit 2; }

tile=${TILE:-576}
ir=$((tile / 4))
shapes=(
  --minShapes=visible:1x1x${tile}x${tile},infrared:1x1x${ir}x${ir},presence:1x2
  --optShapes=visible:2x1x${tile}x${tile},infrared:2x1x${ir}x${ir},presence:2x2
  --maxShapes=visible:8x1x${tile}x${tile},infrared:8x1x${ir}x${ir},presence:8x2
)
case $precision in
  fp16) flags=(--fp16) ;;
  int8)
    [[ -n $calib && -f $calib ]] || { echo "int8 needs a calibration cache built from held-out tiles" >&2; exit 2; }
    flags=(--int8 --fp16 --calib="$calib") ;;
  *) echo "precision must be fp16 or int8" >&2; exit 2 ;;
esac
"$trtexec" --onnx="$onnx" --saveEngine="$engine" "${shapes[@]}" "${flags[@]}"
cp "$onnx.json" "$engine.json"
echo "built $engine ($precision); run it with INSPECTOR__INFERENCE__BACKEND=tensorrt inspector predict ... --model $engine"
