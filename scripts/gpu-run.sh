#!/bin/sh
# The GPU numbers in the notes, in one run on a CUDA host (a checkout with qeffbuild importable):
#   sh scripts/gpu-run.sh RESULTS_DIR
# Builds and validates manifests/gpu.toml's targets, then (on a quiet GPU) benches them beside
# HF generate and sentence-transformers encode, and measures a fresh process's start-up.
set -u
R=${1:-gpu-results}
mkdir -p "$R"
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
