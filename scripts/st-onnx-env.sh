#!/bin/sh
# An environment for sentence-transformers' own ONNX backend, the embedding baseline `qeffbuild bench` times:
#   sh scripts/st-onnx-env.sh [DIR]          # default .st-onnx (run it with qeffbuild's environment active); then
#   QEFFBUILD_ST_ONNX_PYTHON=.st-onnx/bin/python qeffbuild bench minilm-parity
# sentence-transformers runs ONNX through optimum-onnx, which pins transformers below 4.58, so it cannot live
# beside qeffbuild (transformers 5): the bench runs it in this environment's Python, on the same model folder,
# with the torch of constraints.txt and the ONNX Runtime qeffbuild's environment has.
set -eu
DIR=${1:-.st-onnx}
ORT=$(python3 -c 'import onnxruntime; print("onnxruntime==" + onnxruntime.__version__)' 2>/dev/null || echo onnxruntime)
python3 -m venv "$DIR"
"$DIR/bin/pip" install -q -c constraints.txt torch "$ORT" "sentence-transformers>=5,<6" \
  "optimum-onnx[onnxruntime]==0.1.0"
"$DIR/bin/python" -c "import sentence_transformers, optimum.onnxruntime, transformers, onnxruntime as o; \
print('sentence-transformers', sentence_transformers.__version__, '| transformers', transformers.__version__, \
'| onnxruntime', o.__version__)"
