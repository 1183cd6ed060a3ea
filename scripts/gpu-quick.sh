#!/bin/sh
# One GPU session's measurements in one command (the device machine stays warm 30 s only):
#   sh scripts/gpu-quick.sh OUT_DIR tiny|large|profile [SPEC]
# tiny:  whisper-tiny dims fp32 b1/b8 (inductor) build + validate + bench, and a plain-script generate at b1, b8;
# large: whisper-large-v3 dims fp16 b1 build + validate + bench, and the plain-script generate beside it.
set -u
R=$1; mkdir -p "$R"
Q="python3 -m qeffbuild -m manifests/gpu.toml -m manifests/whisper.toml -m manifests/gpu-zoo.toml"
model_dir() {  # the saved model of the load step whose config has this d_model
  python3 -c "import glob,json,os,sys; print(next(os.path.dirname(f) for f in glob.glob('out/.cache/trees/*/model/config.json') if json.load(open(f)).get('d_model')==int(sys.argv[1])))" "$1"
}
if [ "$2" = tiny ]; then
  ( time timeout 170 $Q build -j 4 whisper-tiny-dims-cuda-parity ) > "$R/build-tiny.txt" 2>&1
  timeout 90 $Q bench whisper-tiny-dims-cuda-parity -n 10 --warmup 2 > "$R/bench-tiny.txt" 2>&1
  timeout 90 $Q bench whisper-tiny-dims-cuda-parity -n 10 --warmup 2 --json > "$R/bench-tiny.json" 2>/dev/null
  M=$(model_dir 384)
  for b in 1 8; do timeout 45 python3 benchmarks/plain_generate.py "$M" --batch $b >> "$R/plain-tiny.txt" 2>&1; done
elif [ "$2" = large ]; then
  ( time timeout 290 $Q build whisper-large-v3-zoo-b1-fp16-parity ) > "$R/build-large.txt" 2>&1
  ( time timeout 230 $Q bench whisper-large-v3-zoo-b1-fp16-parity -n 3 --warmup 1 ) > "$R/bench-large.txt" 2>&1
  M=$(model_dir 1280)
  timeout 45 python3 benchmarks/plain_generate.py "$M" --dtype float16 >> "$R/plain-large.txt" 2>&1
fi
if [ "$2" = profile ]; then  # where a step's time goes (kernels per step, time per kernel); SPEC: $3
  S=${3:-whisper-large-v3-zoo-b1-float16}
  ( time timeout 400 $Q build "$S" ) > "$R/build-$S.txt" 2>&1
  timeout 150 python3 benchmarks/profile_decode.py "out/$S" --top 30 > "$R/profile-$S.txt" 2>&1
fi
