#!/bin/sh
# The GPU numbers in the notes, in one run on a CUDA host (a checkout with qeffbuild importable):
#   sh scripts/gpu-run.sh RESULTS_DIR          # gpu.toml (below)
#   sh scripts/gpu-run.sh RESULTS_DIR zoo      # manifests/gpu-zoo.toml: every model, b1/b8, fp16/bf16; then
#                                              # python scripts/zoo_table.py RESULTS_DIR prints docs/gpu.md's table
# Builds and validates manifests/gpu.toml's targets, then (on a quiet GPU) benches them beside
# HF generate and sentence-transformers encode, and measures a fresh process's start-up.
set -u
R=${1:-gpu-results}
mkdir -p "$R"
unset PYTHONDONTWRITEBYTECODE  # start-up is measured as an installed environment runs: with .pyc files
export PYTHONPYCACHEPREFIX=${PYTHONPYCACHEPREFIX:-/tmp/pycache}
if [ "${2:-}" = zoo ]; then
  Z="python3 -m qeffbuild -m manifests/gpu-zoo.toml -m manifests/whisper.toml"
  $Z env --json > "$R/env.json" 2>&1
  # smallest first: a run cut short by its time limit still has the small models' rows
  for V in whisper-tiny-zoo-parity minilm-zoo-gpu-parity whisper-small-zoo-parity distil-large-v3-zoo-parity \
           whisper-large-v3-turbo-zoo-parity bge-large-zoo-gpu-parity whisper-large-v3-zoo-parity; do
    ( time timeout 600 $Z build -j 4 "$V" ) > "$R/build-$V.txt" 2>&1
    timeout 300 $Z bench "$V" -n 5 --warmup 1 --json > "$R/bench-$V.json" 2> "$R/bench-$V.err"
  done
  timeout 120 $Z build whisper-tiny-zoo-b1-float16 whisper-large-v3-zoo-b1-float16 > /dev/null 2>&1
  for S in whisper-tiny-zoo-b1-float16 whisper-large-v3-zoo-b1-float16; do
    timeout 200 python3 benchmarks/gpu_startup.py --spec "$S" --runs 3 --timeout 90 > "$R/startup-$S.txt" 2>&1
  done
  python3 scripts/zoo_table.py "$R" > "$R/zoo.md"
  exit 0
fi
# gpu.toml and the model it builds on (whisper.toml): the other manifests need packages a GPU host may lack
Q="python3 -m qeffbuild -m manifests/gpu.toml -m manifests/whisper.toml"
$Q env --json > "$R/env.json" 2>&1
timeout 300 $Q build -j 4 whisper-tiny-dims-cuda-parity minilm-dims-cuda-parity > "$R/build.txt" 2>&1
echo "build exit $?" >> "$R/build.txt"
timeout 200 $Q bench whisper-tiny-dims-cuda-parity -n 10 --warmup 2 --json > "$R/bench-speech.json" 2> "$R/bench-speech.err"
timeout 100 $Q bench minilm-dims-cuda-parity -n 20 --warmup 3 --json > "$R/bench-embed.json" 2> "$R/bench-embed.err"
timeout 60 $Q build whisper-tiny-dims-cuda-b1 > /dev/null 2>&1  # materialize out/<spec>/ (cached)
timeout 200 python3 benchmarks/gpu_startup.py --runs 3 --timeout 90 > "$R/startup.txt" 2>&1
# half precision last: the slowest to build, and only checked against the float32 reference
timeout 300 $Q build -j 4 whisper-tiny-dims-cuda-half > "$R/build-half.txt" 2>&1
echo "build exit $?" >> "$R/build-half.txt"
