#!/bin/sh
# One GPU session's measurements in one command (the device machine stays warm 30 s only):
#   sh scripts/gpu-quick.sh OUT_DIR MODE [MODE ...]        (modes run in order)
# tiny:    whisper-tiny dims fp32 b1/b8 (inductor) build + validate + bench, and a plain-script generate at b1, b8;
# large:   whisper-large-v3 dims fp16 b1 build + validate + bench, and the plain-script generate beside it;
# large8:  the same at batch 8;
# inturn-tiny, inturn-large: after tiny / large, the plain script's generate and the bench's generate-row call in
#          turn in one process (tiny b1 and b8 fp32; large b1 fp16, INTURN_BATCHES="1 8" for both);
# startup: a fresh process from Transcriber.load to the first token (whisper-tiny dims b1), 3 runs;
# startup-large: the same for whisper-large-v3 dims fp16 b1 (after `large`, which builds it);
# zoo-MODEL: the zoo's MODEL-parity (b1/b8 x float16/bfloat16) build + validate + bench, e.g. zoo-distil-large-v3-zoo;
# diag: the import chain of a load, the kernels that autotune, start-up medians (whisper-tiny dims b1);
# gemv: cuBLAS, Inductor and a hand Triton GEMV at large-v3's decoder shapes (benchmarks/gemv_variants.py);
# profile: where a step's time goes (kernels per step, time per kernel) for $PROFILE_SPEC (default large-v3 b1);
# fusion:  the GEMV kernels' GPU tests, then large-v3 dims fp16 b1 with and without the GEMV fusion, one bench.
# attention: the decode-attention kernel's GPU tests and benchmark, then large-v3 dims fp16 b1 with it and with
#          cuDNN's SDPA, one bench (attention8: the same at batch 8, after the first has run its tests).
# write:   the attention kernels' GPU tests and the GEMV chain's, then large-v3 dims fp16 b1 with the attention's
#          in-place cache write and with Inductor's state-write kernels, one bench, beside the validation's report
#          (write8: the same at batch 8, without the tests).
# rows8:   the GEMV kernels' GPU tests, then large-v3 dims fp16 b8 with its products through the GEMV (the default)
#          and through cuBLAS (gemv_max_rows = 1), one bench beside the validation's report.
# pdl:     the batch-1 GEMV chain with and without programmatic dependent launch (benchmarks/gemv_pdl.py).
# kv:      the attention and GEMV GPU tests, benchmarks/decode_attention.py (with its projection → attention chain,
#          states loaded before the PDL wait and after), then rows8's A/B build and bench without its tests.
# mma:     the GEMV kernels' GPU tests, then the several-row tensor-core product against cuBLAS at large-v3's
#          shapes and 8 rows, with a sweep of its launch config (benchmarks/gemm_rows.py).
# self8:   the attention GPU tests and the kernel's registers per config, then large-v3 dims fp16 b8 built and
#          validated, its step replayed per self-attention variant (benchmarks/profile_decode.py
#          --self-attention-ab), and benched.
set -u
R=$1; shift; mkdir -p "$R"
# The GPU host's site-packages take no bytecode cache, so every process compiled ~1,300 modules from source
# (1.8-5.6 s of a start-up); an installed environment has its .pyc files. Let Python write them, to a
# writable cache.
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=${PYTHONPYCACHEPREFIX:-/tmp/pycache}
Q="python3 -m qeffbuild -m manifests/gpu.toml -m manifests/whisper.toml -m manifests/gpu-zoo.toml"
model_dir() {  # the saved model (a load step's, or a model target's out/MODEL/model) whose config has this d_model
  python3 -c "import glob,json,os,sys; print(next(os.path.dirname(f) for f in glob.glob('out/.cache/trees/*/model/config.json') + glob.glob('out/*/model/config.json') if json.load(open(f)).get('d_model')==int(sys.argv[1])))" "$1"
}
gpu_tests() {  # gpu_tests NAME SECONDS PATH...: the paths' GPU tests into $R/test-NAME.txt; fails if any failed
  name=$1; secs=$2; shift 2
  timeout "$secs" python3 -m pytest -q -o addopts="" -p no:cacheprovider "$@" -m gpu > "$R/test-$name.txt" 2>&1
  tail -3 "$R/test-$name.txt"
  if ! grep -q " passed" "$R/test-$name.txt" || grep -q " failed" "$R/test-$name.txt"; then
    echo "GPU tests failed: nothing built or measured after them"; tail -60 "$R/test-$name.txt"; return 1
  fi
}
for mode in "$@"; do
  echo "== $mode $(date +%T)"
  case $mode in
  tiny)
    ( time timeout 170 $Q build -j 4 whisper-tiny-dims-cuda-parity ) > "$R/build-tiny.txt" 2>&1
    timeout 200 $Q bench whisper-tiny-dims-cuda-parity -n 10 --warmup 2 > "$R/bench-tiny.txt" 2>&1
    M=$(model_dir 384)
    for b in 1 8; do timeout 60 python3 benchmarks/plain_generate.py "$M" --batch $b >> "$R/plain-tiny.txt" 2>&1; done ;;
  large|large8)
    V=whisper-large-v3-zoo-b1-fp16-parity; B=1
    [ "$mode" = large8 ] && V=whisper-large-v3-zoo-b8-fp16-parity && B=8
    ( time timeout 290 $Q build "$V" ) > "$R/build-$mode.txt" 2>&1
    # eager generate is host-bound and its samples spread ±10-20 % on the GPU host: the plain script runs before and
    # after the bench (BENCH_N samples a row, PLAIN_SAMPLES a plain run), so a slow spell of the host shows
    M=$(model_dir 1280)
    timeout 100 python3 benchmarks/plain_generate.py "$M" --dtype float16 --batch $B --samples "${PLAIN_SAMPLES:-7}" \
      >> "$R/plain-$mode.txt" 2>&1
    ( time timeout 230 $Q bench "$V" -n "${BENCH_N:-5}" --warmup 1 ) > "$R/bench-$mode.txt" 2>&1
    timeout 100 python3 benchmarks/plain_generate.py "$M" --dtype float16 --batch $B --samples "${PLAIN_SAMPLES:-7}" \
      >> "$R/plain-$mode.txt" 2>&1
    grep -v "^ *$" "$R/bench-$mode.txt" | head -12; cat "$R/plain-$mode.txt" ;;
  inturn-tiny|inturn-large)
    # the plain call and the bench's generate-row call, one sample each in turn in one process, on the same model
    # (benchmarks/plain_generate.py --beside-bench): host drift between a plain run and a bench lands on both
    if [ "$mode" = inturn-large ]; then M=$(model_dir 1280); D=float16; BS=${INTURN_BATCHES:-1}
    else M=$(model_dir 384); D=float32; BS=${INTURN_BATCHES:-1 8}; fi
    for b in $BS; do
      timeout 250 python3 benchmarks/plain_generate.py "$M" --dtype $D --batch $b --samples "${INTURN_SAMPLES:-15}" \
        --beside-bench >> "$R/$mode.txt" 2>&1
    done
    grep -A3 "^in turn" "$R/$mode.txt" ;;
  startup)
    timeout 60 $Q build whisper-tiny-dims-cuda-b1 > /dev/null 2>&1  # materialize out/<spec>/ (cached); fills .pyc
    timeout 200 python3 benchmarks/gpu_startup.py --runs 3 --timeout 60 > "$R/startup.txt" 2>&1 ;;
  startup-large)
    timeout 200 $Q build whisper-large-v3-zoo-b1-float16 > /dev/null 2>&1
    timeout 200 python3 benchmarks/gpu_startup.py --spec whisper-large-v3-zoo-b1-float16 --runs 3 --timeout 60 \
      > "$R/startup-large.txt" 2>&1 ;;
  zoo-*)
    V=${mode#zoo-}-parity
    ( time timeout 400 $Q build -j 4 "$V" ) > "$R/build-$V.txt" 2>&1
    timeout 200 $Q bench "$V" -n 3 --warmup 1 --json > "$R/bench-$V.json" 2> "$R/bench-$V.err"
    python3 scripts/zoo_table.py "$R" > "$R/zoo.md" 2>&1 ;;
  diag)  # where start-up still goes: the import chain of a load, each kernel that autotunes, the medians
    timeout 170 $Q build whisper-tiny-dims-cuda-b1 > "$R/build-diag.txt" 2>&1
    timeout 90 python3 -X importtime -c "from qeffbuild.tasks.speech.transcriber import Transcriber as T; \
T.load('out/whisper-tiny-dims-cuda-b1', 'inductor', 'cuda').transcribe(['manifests/data/speech/hello.wav'], max_new_tokens=1)" \
      2> "$R/importtime.txt" > /dev/null
    timeout 90 python3 benchmarks/profile_startup.py out/whisper-tiny-dims-cuda-b1 --top 40 > "$R/profile-startup.txt" 2>&1
    timeout 200 python3 benchmarks/gpu_startup.py --runs 3 --timeout 60 > "$R/startup.txt" 2>&1 ;;
  gemv)
    timeout 240 python3 benchmarks/gemv_variants.py > "$R/gemv.txt" 2>&1 ;;
  gemv-sweep)  # the hand kernel's finer block sweep at batch 1 (which config qeffbuild::gemv ships)
    timeout 240 python3 benchmarks/gemv_variants.py --sweep > "$R/gemv-sweep.txt" 2>&1 ;;
  fusion)
    timeout 150 python3 -m pytest -q -o addopts="" -p no:cacheprovider tests/backends/test_gemv.py > "$R/test-gemv.txt" 2>&1
    tail -3 "$R/test-gemv.txt"
    ( time timeout 330 $Q build whisper-large-v3-zoo-b1-fusion ) > "$R/build-fusion.txt" 2>&1
    timeout 150 $Q bench whisper-large-v3-zoo-b1-fusion -n 5 --warmup 1 > "$R/bench-fusion.txt" 2>&1 ;;
  attention|attention8)
    if [ "$mode" = attention ]; then
      timeout 90 python3 -m pytest -q -o addopts="" -p no:cacheprovider tests/backends/test_attention.py \
        > "$R/test-attention.txt" 2>&1
      tail -3 "$R/test-attention.txt"
      if ! grep -q " passed" "$R/test-attention.txt" || grep -q " failed" "$R/test-attention.txt"; then
        echo "attention tests failed: no build"; continue
      fi
      timeout 100 python3 benchmarks/decode_attention.py > "$R/decode-attention.txt" 2>&1
      V=whisper-large-v3-zoo-b1-attention
    else
      V=whisper-large-v3-zoo-b8-attention
    fi
    ( time timeout 310 $Q build -j 2 "$V" ) > "$R/build-$mode.txt" 2>&1
    tail -4 "$R/build-$mode.txt"
    timeout 130 $Q bench "$V" -n 3 --warmup 1 > "$R/bench-$mode.txt" 2>&1 ;;
  write|write8|rows8)  # the GPU tests (not write8), then an A/B validation built, validated and benched
    case $mode in
      write) V=whisper-large-v3-zoo-b1-state-write; TESTS="tests/backends/test_attention.py tests/backends/test_gemv.py" ;;
      write8) V=whisper-large-v3-zoo-b8-state-write; TESTS="" ;;
      rows8) V=whisper-large-v3-zoo-b8-gemv-rows; TESTS="tests/backends/test_gemv.py" ;;
    esac
    # shellcheck disable=SC2086  # TESTS is a list of paths
    if [ -n "$TESTS" ]; then gpu_tests "$mode" 240 $TESTS || continue; fi
    ( time timeout 330 $Q build -j 2 "$V" ) > "$R/build-$mode.txt" 2>&1
    tail -4 "$R/build-$mode.txt"
    grep -v "^ *$" "out/$V/report.txt" | head -12
    timeout 140 $Q bench "$V" -n 3 --warmup 1 > "$R/bench-$mode.txt" 2>&1
    grep -v "^ *$" "$R/bench-$mode.txt" | head -40 ;;
  kv)  # the attention and GEMV GPU tests, the attention benchmark, then rows8's A/B build and bench
    gpu_tests kv 200 tests/backends/test_attention.py tests/backends/test_gemv.py || continue
    timeout 90 python3 benchmarks/decode_attention.py > "$R/decode-attention.txt" 2>&1; cat "$R/decode-attention.txt"
    V=whisper-large-v3-zoo-b8-gemv-rows
    ( time timeout 300 $Q build -j 2 "$V" ) > "$R/build-kv.txt" 2>&1
    tail -4 "$R/build-kv.txt"
    grep -v "^ *$" "out/$V/report.txt" | head -12
    timeout 140 $Q bench "$V" -n 3 --warmup 1 > "$R/bench-kv.txt" 2>&1
    grep -v "^ *$" "$R/bench-kv.txt" | head -40 ;;
  self8)
    gpu_tests self8 150 tests/backends/test_attention.py || continue
    timeout 60 python3 benchmarks/attention_registers.py > "$R/attention-registers.txt" 2>&1
    grep -v -i warn "$R/attention-registers.txt"
    V=whisper-large-v3-zoo-b8-fp16-parity
    ( time timeout 300 $Q build -j 2 "$V" ) > "$R/build-self8.txt" 2>&1
    tail -4 "$R/build-self8.txt"
    grep -v "^ *$" "out/$V/report.txt" | head -14
    timeout 60 $Q build whisper-large-v3-zoo-b8-float16 > /dev/null 2>&1  # materializes out/<spec>/ (cached)
    timeout 120 python3 benchmarks/profile_decode.py out/whisper-large-v3-zoo-b8-float16 --self-attention-ab \
      > "$R/self-ab.txt" 2>&1; cat "$R/self-ab.txt"
    timeout 150 $Q bench "$V" -n 5 --warmup 1 > "$R/bench-self8.txt" 2>&1
    grep -v "^ *$" "$R/bench-self8.txt" | head -40 ;;
  mma)
    gpu_tests mma 240 tests/backends/test_gemv.py || continue
    timeout 300 python3 benchmarks/gemm_rows.py --rows 8 > "$R/gemm-rows.txt" 2>&1; cat "$R/gemm-rows.txt" ;;
  pdl)
    timeout 100 python3 benchmarks/gemv_pdl.py > "$R/gemv-pdl.txt" 2>&1; cat "$R/gemv-pdl.txt" ;;
  profile)
    S=${PROFILE_SPEC:-whisper-large-v3-zoo-b1-float16}
    ( time timeout 400 $Q build "$S" ) > "$R/build-$S.txt" 2>&1
    timeout 150 python3 benchmarks/profile_decode.py "out/$S" --top 30 > "$R/profile-$S.txt" 2>&1 ;;
  *) echo "unknown mode $mode" ;;
  esac
done
echo "== done $(date +%T)"
