#!/usr/bin/env bash
# The second round's GPU measurements in three calls of the device tool (one H200, torch 2.11),
# written so that a 30-minute lease holds them all. Run from the repository root:
#
#   bash benchmarks/h200_session.sh start   # carry .gpu/cu13.tar.xz: unpack it, start the ablation
#   bash benchmarks/h200_session.sh tests   # carry .whl: install FA4, CUDA tests, collect the ablation
#   bash benchmarks/h200_session.sh bench   # generation-mask, build and prompt-mask benchmarks
#   bash benchmarks/h200_session.sh stream  # carry .whl: the streaming benchmark and step profile
#   bash benchmarks/h200_session.sh retest  # carry .whl: the CUDA tests, the last session's first
#   bash benchmarks/h200_session.sh profile # carry .whl: streaming benchmark, step and build profiles
#   bash benchmarks/h200_session.sh final   # carry .whl: the tests left, build, prompt, packed rows
#   bash benchmarks/h200_session.sh final2  # carry .whl: what final's time cut, a build profile
#   bash benchmarks/h200_session.sh graphs  # carry .whl: streaming with CUDA graphs, their tests
#   bash benchmarks/h200_session.sh next    # carry .whl: everything the 2026-12-01 sessions left
#   bash benchmarks/h200_session.sh kernel  # carry .whl: the block kernel's tests, builds, prompts
#   bash benchmarks/h200_session.sh after   # the streaming steps with graphs, the tests left
#   bash benchmarks/h200_session.sh tables  # carry .whl: the lighter host tables (kernel tests,
#                                           # builds, prompts, the host half on the H200's host)
#   bash benchmarks/h200_session.sh pinned  # carry .whl: tables, then the other CUDA tests
#   bash benchmarks/h200_session.sh onecopy # carry .whl and .base (the code before, git archive):
#                                           # block-kernel tests, prompt builds A/B, 128K builds
#   bash benchmarks/h200_session.sh rest    # carry .whl: the transformers GPU tests, the other CUDA tests
#   bash benchmarks/h200_session.sh ab      # carry .whl and .base: prompt builds A/B (4 turns), the
#                                           # streaming CUDA tests (what rest's time cut)
#
# ABLATE=0 bash benchmarks/h200_session.sh start unpacks the libraries without the ablation.
#
# FlashAttention-4's install order is in ../shared/notes/gpu-anchors.md: the cu13 libraries are
# copied over the pip target AFTER pip ran (pip --target --upgrade deletes them otherwise).
# The ablation runs in its own process session while the CUDA tests run (they check values,
# not speed); the benchmarks wait for it, so nothing shares the GPU while it is timed.
set -uo pipefail
OUT=${OUT:-/tmp/out}
SITE=/tmp/site
ABL=/tmp/abl
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

env_line() {
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c 'import torch, triton; print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__)'
  python3 -c 'import importlib.metadata as m; print("flash-attn-4", m.version("flash-attn-4"))' 2>/dev/null || echo "flash-attn-4 not installed"
  date -u +%FT%TZ
}

builds_128k() {  # run from benchmarks/: every mask's build at 128K tokens, both frame sizes
  for p in 1560 256; do
    timeout 100 python3 mask_build.py --seq-lens 131072 --patches $p --builders closed-form \
      closed-form-torch compiled --masks causal-frame chunk-causal chunk-causal-window \
      sliding-window-sinks teacher-forcing packed-causal-frame \
      --out "$OUT/mask_build-$1-$p-h200.json" > "$OUT/build-$p.log" 2>&1
    grep -E "closed-form" "$OUT/build-$p.log" | tail -12
  done
}

use_fa4() {
  if [ ! -d "$SITE/flash_attn" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl || return 1
    cp -r /tmp/CU13/. "$SITE"/ || return 1
  fi
  export PYTHONPATH="$SITE:$SITE/nvidia_cutlass_dsl/dsl_packages:$PWD"
}

PYTEST=(python3 -m pytest -v --tb=short -p no:logging -p no:cacheprovider -W ignore::DeprecationWarning)

stream_runs() {  # the streaming benchmark and the step profile; $1: the benchmark's time budget
  (cd benchmarks &&
    timeout $(( ${1:-300} + 40 )) python3 streaming.py --time-budget-s "${1:-300}" \
      --out "$OUT/streaming-h200.json" > "$OUT/streaming.log" 2>&1
    timeout 90 python3 stream_profile.py > "$OUT/stream_profile.txt" 2>&1
    grep -v Deprecat "$OUT/stream_profile.txt" | grep -E "^host|^do_bench|^synchron|^  "
    tail -12 "$OUT/streaming.log")
}

wait_ablation() {  # $1: seconds at most
  local waited=0
  while [ ! -f "$ABL/done" ] && [ "$waited" -lt "$1" ]; do sleep 5; waited=$((waited + 5)); done
  [ -f "$ABL/done" ]
}

case "${1:-}" in
start)
  mkdir -p /tmp/CU13 && tar -xJf .gpu/cu13.tar.xz -C /tmp/CU13
  export PYTHONPATH="$PWD"
  env_line | tee "$OUT/env.txt"
  [ "${ABLATE:-1}" = 0 ] && exit 0
  rm -rf "$ABL" && mkdir -p "$ABL"
  # Triton flex (FA4 is not on the path of this process): the kernel does not change the verdict.
  setsid bash -c "start=\$(date +%s); python3 -m flexframe ablate --config examples/ablation_gpu.yaml \
    --out $ABL/run > $ABL/ablate.log 2>&1; echo \$? > $ABL/rc; \
    echo \$(( \$(date +%s) - start )) > $ABL/seconds; touch $ABL/done" < /dev/null &
  sleep 20
  tail -5 "$ABL/ablate.log"
  ;;
tests)
  use_fa4 || { echo "FA4 install failed"; exit 1; }
  env_line | tee "$OUT/env.txt"
  # -v names each test as it ends and no captured logs swamp the tracebacks: on 2026-12-01 the
  # suite (sharing the GPU with the ablation) outran a 330 s limit before pytest's summary.
  timeout 480 "${PYTEST[@]}" tests/test_cuda.py tests/test_streaming_cuda.py \
    "tests/test_sampling.py::test_sampling_on_cuda_keeps_device_and_values" \
    tests/test_transformers.py -k "cuda or gpu" 2>&1 | tee "$OUT/pytest.log" | grep -E "PASSED|FAILED|ERROR|SKIPPED|passed|failed" | tail -70
  timeout 90 python3 benchmarks/stream_profile.py > "$OUT/stream_profile.txt" 2>&1
  tail -25 "$OUT/stream_profile.txt"
  wait_ablation "${WAIT_S:-150}" && echo "ablation done in $(cat $ABL/seconds) s, rc $(cat $ABL/rc)"
  mkdir -p "$OUT/abl" && cp "$ABL"/ablate.log "$OUT/abl/" &&
    cp "$ABL"/run/results.json "$ABL"/run/results.md "$ABL"/run/loss_curves.png "$OUT/abl/" 2>/dev/null
  tail -30 "$ABL/ablate.log"
  ;;
bench)
  use_fa4 || { echo "FA4 install failed"; exit 1; }
  wait_ablation 300 || echo "WARNING: the ablation is still running; timings share the GPU"
  env_line | tee "$OUT/env.txt"
  cd benchmarks || exit 1
  timeout 170 python3 attention.py --seq-lens 32760 --patches 1560 \
    --masks causal-frame chunk-causal chunk-causal-window sliding-window-sinks packed-causal-frame \
    --frames-per-chunk 3 --window-size 2 --variants cudnn-token-causal flex-flash flex-padded-flash \
    --passes fwd fwdbwd --rep-ms 150 --time-budget-s 140 --out "$OUT/attention-generation-1560.json" > "$OUT/bench.log" 2>&1
  timeout 80 python3 attention.py --seq-lens 65520 --patches 1560 --masks teacher-forcing \
    --variants cudnn-token-causal flex-flash --passes fwd fwdbwd --rep-ms 150 \
    --out "$OUT/attention-teacher-forcing-1560.json" >> "$OUT/bench.log" 2>&1
  timeout 150 python3 attention.py --seq-lens 16384 65536 --patches 256 \
    --masks causal-frame chunk-causal sliding-window-sinks teacher-forcing packed-causal-frame \
    --variants cudnn-token-causal flex-flash --passes fwd fwdbwd --rep-ms 150 \
    --time-budget-s 120 --out "$OUT/attention-generation-256.json" >> "$OUT/bench.log" 2>&1
  timeout 60 python3 mask_build.py --seq-lens 131072 --patches 1560 256 --builders closed-form \
    closed-form-cached compiled --masks causal-frame chunk-causal chunk-causal-window sliding-window-sinks \
    teacher-forcing packed-causal-frame --out "$OUT/mask_build-generation-h200.json" >> "$OUT/bench.log" 2>&1
  timeout 90 python3 prompt_masks.py --device cuda --out "$OUT/prompt_masks-h200.json" >> "$OUT/bench.log" 2>&1
  grep -E "^\|" "$OUT/bench.log" | grep -v -- "---" | tail -70
  ;;
stream)
  use_fa4 || { echo "FA4 install failed"; exit 1; }
  env_line | tee "$OUT/env.txt"
  stream_runs 260
  ;;
retest)
  use_fa4 || { echo "FA4 install failed"; exit 1; }
  env_line | tee "$OUT/env.txt"
  FIRST=("tests/test_cuda.py::test_flash_keeps_the_skipped_blocks_of_a_block_mask_whose_mask_mod_is_trivial"
         tests/test_streaming_cuda.py)
  timeout 200 "${PYTEST[@]}" "${FIRST[@]}" 2>&1 | tee "$OUT/retest.log" |
    grep -E "PASSED|FAILED|ERROR|passed|failed|Error" | tail -25
  timeout 320 "${PYTEST[@]}" tests/test_cuda.py tests/test_sampling.py::test_sampling_on_cuda_keeps_device_and_values \
    tests/test_transformers.py -k "(cuda or gpu) and not test_flash_keeps" 2>&1 | tee "$OUT/pytest.log" |
    grep -E "PASSED|FAILED|ERROR|passed|failed" | tail -60
  ;;
profile)
  use_fa4 || { echo "FA4 install failed"; exit 1; }
  env_line | tee "$OUT/env.txt"
  (cd benchmarks && timeout 60 python3 build_profile.py > "$OUT/build_profile.txt" 2>&1)
  grep -E "^## |synchronizing" "$OUT/build_profile.txt"
  stream_runs 200
  ;;
final)
  use_fa4 || { echo "FA4 install failed"; exit 1; }
  env_line | tee "$OUT/env.txt"
  timeout 200 "${PYTEST[@]}" tests/test_cuda.py::test_closed_form_builder_on_the_gpu_gives_torchs_tensors \
    "tests/test_cuda.py::test_the_tuned_default_gives_the_triton_result[timestamp-causal-128]" \
    tests/test_cuda.py::test_the_tuned_default_serves_changing_lengths \
    tests/test_streaming_cuda.py::test_every_step_after_the_first_runs_the_same_compiled_kernel \
    tests/test_sampling.py::test_sampling_on_cuda_keeps_device_and_values \
    tests/test_transformers.py::test_flex_on_the_gpu_trains_and_agrees_with_sdpa_in_bfloat16 \
    2>&1 | tee "$OUT/final-tests.log" | grep -E "PASSED|FAILED|ERROR|passed|failed" | tail -30
  cd benchmarks || exit 1
  timeout 60 python3 mask_build.py --seq-lens 131072 --patches 1560 256 --builders closed-form \
    closed-form-cached compiled --masks causal-frame chunk-causal chunk-causal-window sliding-window-sinks \
    teacher-forcing packed-causal-frame --out "$OUT/mask_build-generation-h200.json" > "$OUT/bench.log" 2>&1
  timeout 90 python3 prompt_masks.py --device cuda --out "$OUT/prompt_masks-h200.json" >> "$OUT/bench.log" 2>&1
  timeout 90 python3 attention.py --seq-lens 32760 --patches 1560 --masks causal-frame packed-causal-frame \
    --variants cudnn-token-causal flex-flash --passes fwd fwdbwd --rep-ms 150 --time-budget-s 80 \
    --out "$OUT/attention-packed-1560.json" >> "$OUT/bench.log" 2>&1
  grep -E "^\|" "$OUT/bench.log" | grep -v -- "---" | tail -60
  cd .. && timeout 110 "${PYTEST[@]}" tests/test_cuda.py::test_flex_equals_sdpa_in_bf16_forward_and_backward \
    2>&1 | tee "$OUT/final-flex-tests.log" | grep -E "FAILED|ERROR|passed|failed" | tail -15
  ;;
final2)
  use_fa4 || { echo "FA4 install failed"; exit 1; }
  env_line | tee "$OUT/env.txt"
  T=tests/test_cuda.py::test_flex_equals_sdpa_in_bf16_forward_and_backward
  S=tests/test_streaming_cuda.py::test_streaming_equals_the_full_forward_in_bf16
  timeout 200 "${PYTEST[@]}" "$T[sliding-window-128]" "$T[sliding-window-sinks-128]" "$T[teacher-forcing-128]" \
    "$T[timestamp-causal-64]" "$T[timestamp-causal-128]" "$S[chunk-causal-128-default]" \
    "$S[sliding-window-128-default]" "$S[chunk-causal-64-default]" "$S[sliding-window-64-default]" \
    2>&1 | tee "$OUT/final2-tests.log" | grep -E "PASSED|FAILED|ERROR|passed|failed" | tail -30
  cd benchmarks || exit 1
  timeout 80 python3 mask_build.py --seq-lens 131072 --patches 256 --builders closed-form \
    closed-form-cached compiled --masks causal-frame chunk-causal chunk-causal-window sliding-window-sinks \
    teacher-forcing packed-causal-frame --out "$OUT/mask_build-generation-256-h200.json" > "$OUT/bench.log" 2>&1
  grep -E "^\|" "$OUT/bench.log" | grep -v -- "---" | tail -20
  timeout 40 python3 build_profile.py --cases sliding-window-sinks --reps 100 > "$OUT/build_profile.txt" 2>&1
  head -30 "$OUT/build_profile.txt" | cut -c1-150
  ;;
graphs)
  use_fa4 || { echo "FA4 install failed"; exit 1; }
  env_line | tee "$OUT/env.txt"
  (cd benchmarks && timeout 110 python3 streaming.py --heads 12 --context-only \
    --out "$OUT/streaming-graphs-h200.json" > "$OUT/streaming-graphs.log" 2>&1)
  tail -5 "$OUT/streaming-graphs.log"
  timeout 75 "${PYTEST[@]}" tests/test_streaming_cuda.py -k cuda_graph 2>&1 | tee "$OUT/graphs-tests.log" |
    grep -E "PASSED|FAILED|ERROR|passed|failed|Error" | tail -12
  (cd benchmarks && timeout 20 python3 build_profile.py --cases sliding-window-sinks causal-frame \
    --reps 100 > "$OUT/build_profile.txt" 2>&1; grep "^## " "$OUT/build_profile.txt")
  ;;
next)  # what the 2026-12-01 sessions left unmeasured, in one call (about 7 minutes)
  use_fa4 || { echo "FA4 install failed"; exit 1; }
  env_line | tee "$OUT/env.txt"
  timeout 150 "${PYTEST[@]}" tests/test_streaming_cuda.py -k cuda_graph 2>&1 | tee "$OUT/graphs-tests.log" |
    grep -E "PASSED|FAILED|ERROR|passed|failed" | tail -8
  (cd benchmarks && timeout 110 python3 streaming.py --heads 12 16 --chunks 1 --context-only \
    --out "$OUT/streaming-graphs-h200.json" > "$OUT/streaming-graphs.log" 2>&1; tail -5 "$OUT/streaming-graphs.log")
  (cd benchmarks && timeout 60 python3 mask_build.py --seq-lens 131072 --patches 1560 --builders closed-form \
    compiled --masks causal-frame chunk-causal-window sliding-window-sinks teacher-forcing \
    --out "$OUT/mask_build-unions-h200.json" > "$OUT/bench.log" 2>&1
   timeout 80 python3 prompt_masks.py --device cuda --out "$OUT/prompt_masks-h200.json" >> "$OUT/bench.log" 2>&1
   grep -E "closed-form \||flexframe|transformers" "$OUT/bench.log" | tail -14)
  timeout 150 "${PYTEST[@]}" tests/test_cuda.py tests/test_streaming_cuda.py \
    -k "tuned_default or reconstruction_loss or documented_order or triton or blocks_past" 2>&1 | tee "$OUT/rest-tests.log" |
    grep -E "FAILED|ERROR|passed|failed" | tail -10
  ;;
kernel)  # the one-launch block kernel: its GPU tests, the builds and prompt masks (~7 minutes)
  use_fa4 || { echo "FA4 install failed"; exit 1; }
  env_line | tee "$OUT/env.txt"
  timeout 200 "${PYTEST[@]}" tests/test_cuda.py -k "block_kernel or closed_form_builder" 2>&1 |
    tee "$OUT/kernel-tests.log" | grep -E "FAILED|ERROR|passed|failed" | tail -8
  (cd benchmarks &&
   builds_128k kernel
   timeout 100 python3 prompt_masks.py --device cuda --out "$OUT/prompt_masks-h200.json" \
     > "$OUT/prompt.log" 2>&1
   grep -E "flexframe|transformers|attention|sdpa" "$OUT/prompt.log" | tail -12)
  ;;
after)  # after kernel, on the same machine: streaming with graphs, then the tests left (~8 min)
  use_fa4 || { echo "FA4 install failed"; exit 1; }
  (cd benchmarks && timeout 230 python3 streaming.py --heads 12 16 --chunks 1 3 --context-only \
    --out "$OUT/streaming-graphs-h200.json" > "$OUT/streaming-graphs.log" 2>&1
   grep -E "^\|" "$OUT/streaming-graphs.log" | tail -6)
  timeout 300 "${PYTEST[@]}" tests/test_cuda.py tests/test_streaming_cuda.py \
    -k "tuned_default or triton or blocks_past or compiled_kernel" 2>&1 | tee "$OUT/rest-tests.log" |
    grep -E "FAILED|ERROR|passed|failed" | tail -10
  ;;
tables)  # after the host tables got lighter (unmeasured on a GPU when written): ~8 minutes
  use_fa4 || { echo "FA4 install failed"; exit 1; }
  env_line | tee "$OUT/env.txt"
  # Every block-kernel case (the 120 random ones never ran on the kernel's runtime piece loop).
  timeout 300 "${PYTEST[@]}" tests/test_cuda.py -k "block_kernel or closed_form_builder" 2>&1 |
    tee "$OUT/tables-tests.log" | grep -E "FAILED|ERROR|passed|failed" | tail -8
  (cd benchmarks &&
   timeout 90 python3 host_tables.py --anchor-reps 5 --out "$OUT/host_tables-h200-host.json" \
     > "$OUT/host_tables.log" 2>&1
   tail -16 "$OUT/host_tables.log"
   builds_128k tables
   timeout 100 python3 prompt_masks.py --device cuda --out "$OUT/prompt_masks-tables-h200.json" \
     > "$OUT/prompt.log" 2>&1
   grep -E "flexframe|transformers" "$OUT/prompt.log" | tail -8
   timeout 60 python3 prompt_build_routes.py > "$OUT/prompt_build_routes-tables-h200.txt" 2>&1
   cat "$OUT/prompt_build_routes-tables-h200.txt")
  ;;
pinned)  # after the prompt keys went run by run and the copies page-locked: tables, then the rest
  bash "$0" tables
  use_fa4 || { echo "FA4 install failed"; exit 1; }
  timeout 230 "${PYTEST[@]}" tests/test_cuda.py tests/test_streaming_cuda.py \
    -k "not block_kernel and not closed_form_builder" 2>&1 | tee "$OUT/pinned-tests.log" |
    grep -E "FAILED|ERROR|passed|failed" | tail -12
  (cd benchmarks && timeout 40 python3 build_profile.py --cases prompt --reps 100 \
    > "$OUT/build_profile_prompt.txt" 2>&1; grep -E "^## |synchronizing" "$OUT/build_profile_prompt.txt")
  ;;
onecopy)  # one host-to-device copy a prompt build (2026-12-02): ~6 minutes
  use_fa4 || { echo "FA4 install failed"; exit 1; }
  env_line | tee "$OUT/env.txt"
  timeout 200 "${PYTEST[@]}" tests/test_cuda.py -k "block_kernel or closed_form_builder or busy" \
    2>&1 | tee "$OUT/onecopy-kernel-tests.log" | grep -E "FAILED|ERROR|passed|failed" | tail -8
  (cd benchmarks &&
   for r in 1 2 3; do  # the code before (.base) and now, in turns on the same host
     for v in base now; do
       PP=$PYTHONPATH; [ $v = base ] && PP="$PWD/../.base:$PYTHONPATH"
       PYTHONPATH="$PP" python3 -c 'import flexframe; print(flexframe.__file__)'
       PYTHONPATH="$PP" timeout 60 python3 prompt_masks.py --device cuda --build-only --rep-ms 500 \
         --out "$OUT/prompt_masks-onecopy-$v-r$r-h200.json" > "$OUT/prompt-$v-$r.log" 2>&1
       echo "== $v, run $r"; grep -E "flexframe closed form|create_causal_mask \(flex" "$OUT/prompt-$v-$r.log"
     done
   done
   timeout 40 python3 build_profile.py --cases prompt --reps 200 > "$OUT/build_profile_prompt.txt" 2>&1
   grep -E "^## |synchronizing" "$OUT/build_profile_prompt.txt"
   builds_128k onecopy)
  ;;
rest)  # the GPU tests the 2026-12-01 leases did not reach: ~9 minutes
  use_fa4 || { echo "FA4 install failed"; exit 1; }
  env_line | tee "$OUT/env.txt"
  timeout 150 "${PYTEST[@]}" tests/test_transformers.py -k "cuda or gpu" \
    "tests/test_sampling.py::test_sampling_on_cuda_keeps_device_and_values" 2>&1 |
    tee "$OUT/rest-hf-tests.log" | grep -E "FAILED|ERROR|passed|failed" | tail -8
  timeout 400 "${PYTEST[@]}" --durations=12 tests/test_cuda.py tests/test_streaming_cuda.py \
    -k "not block_kernel and not closed_form_builder and not busy" 2>&1 |
    tee "$OUT/rest-tests.log" | grep -E "FAILED|ERROR|passed|failed|^[0-9.]+s " | tail -30
  ;;
ab)  # the prompt builds, before and now in four turns, then the streaming CUDA tests: ~9 minutes
  use_fa4 || { echo "FA4 install failed"; exit 1; }
  env_line | tee "$OUT/env.txt"
  (cd benchmarks &&
   for r in 1 2 3 4; do
     for v in base now; do
       PP=$PYTHONPATH; [ $v = base ] && PP="$PWD/../.base:$PYTHONPATH"
       PYTHONPATH="$PP" timeout 60 python3 prompt_masks.py --device cuda --build-only --rep-ms 500 \
         --out "$OUT/prompt_masks-ab-$v-r$r-h200.json" > "$OUT/prompt-$v-$r.log" 2>&1
       echo "== $v, run $r"; grep -E "flexframe closed form|create_causal_mask \(flex" "$OUT/prompt-$v-$r.log"
     done
   done)
  timeout 360 "${PYTEST[@]}" --durations=8 tests/test_streaming_cuda.py 2>&1 |
    tee "$OUT/ab-streaming-tests.log" | grep -E "FAILED|ERROR|passed|failed|^[0-9.]+s " | tail -14
  ;;
*)
  echo "usage: $0 start|tests|bench|stream|retest|profile|final|final2|graphs|next|kernel|after|tables|pinned|onecopy|rest|ab"
  exit 2
  ;;
esac
