#!/usr/bin/env bash
# GPU check of issue 8, in one prepared script (ends within 7.5 minutes: each step has a timeout, all one deadline):
#   1. `adaptir parity --device cuda`: the fixtures' parity cases (AdaptIR block IPT C=576/192 and EDT, the whole
#      IPT + AdaptIR model, tasks 2 and 4) and the atan2 / amplitude CUDA kernels, against torch and the CPU;
#   2. a tiny backbone (ipt-tiny, 1 pre-training step on fixtures/images/set5) and AdaptIR training on it for a
#      fixed number of steps on CUDA and on the CPU (`adaptir train --device cuda|cpu`): time per step;
#   3. export to ONNX, `adaptir validate` on the CPU provider and on the CUDA provider with --strict-ep (where an
#      ONNX Runtime GPU library is found), `adaptir ort-latency` on both;
#   4. one table: train step CUDA vs CPU, ORT latency CUDA vs CPU, parity errors on CUDA;
#   5. (in the table too) if time is left: ipt-base (the released size) AdaptIR train step on CUDA and ORT latency of its export.
#
# HERE (the machine without a GPU), once per change:
#   CARGO_BUILD_JOBS=1 nice -n 10 scripts/build-cuda.sh   # target-cuda/release/adaptir (57 MiB, cold 9-17 min)
#   scripts/gpu-check.sh --pack                           # .gpu-carry/: xz of that binary + ORT's CUDA build
# The device tool copies the working tree (about 34 MiB) plus the carried paths, 64 MiB in all: the binary alone
# is 57 MiB, so it travels xz-compressed (7 MiB); ONNX Runtime 1.31.1's CUDA build (onnxruntime-gpu, CUDA 13:
# 300 MiB) travels as scripts/pack-ort-gpu.py prunes it: GPU code for sm_90 only, unused LLM kernels zeroed
# (22 MiB xz). Then:
#   run(command="scripts/gpu-check.sh", carry=[".gpu-carry"], timeout_s=540)
# (the GPU machines have PyTorch's CUDA 13 libraries, cuDNN among them, which the binary and ORT's CUDA provider
# load; without a carried ORT CUDA build the ORT CUDA rows say n/a, with ORT's reason).
#
# ON ANY GPU MACHINE with the repository: scripts/gpu-check.sh [--bin PATH]   (default: target-cuda/release/adaptir
# or the unpacked .gpu-carry). Logs and JSON go to $OUT (device tool) or $GPU_CHECK_OUT (default /tmp/gpu-check).
# Exit: 0 all ran and parity passed, 1 parity or validation failed, 2 could not run (no binary / GPU / library).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CARRY=$ROOT/.gpu-carry

if [ "${1:-}" = "--pack" ]; then
  set -e
  bin=${ADAPTIR_CUDA_TARGET_DIR:-$ROOT/target-cuda}/release/adaptir
  [ -x "$bin" ] || { echo "gpu-check --pack: $bin missing: run scripts/build-cuda.sh first" >&2; exit 2; }
  mkdir -p "$CARRY"
  xz -T0 -6 -c "$bin" >"$CARRY/adaptir.xz.tmp" && mv "$CARRY/adaptir.xz.tmp" "$CARRY/adaptir.xz"
  # ONNX Runtime's CUDA build (its CPU provider too), pruned to the card's generation so that it fits the carry.
  rm -f "$CARRY/libonnxruntime.so.1.31.1.xz"
  python3 "$ROOT/scripts/pack-ort-gpu.py" --out "$CARRY/ort-gpu" \
    || echo "gpu-check --pack: no ONNX Runtime CUDA build packed: the ORT CUDA rows will say n/a" >&2
  tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -n1 | cut -f1)
  carry=$(du -cb "$CARRY"/* "$CARRY"/ort-gpu/* 2>/dev/null | grep -v "ort-gpu$" | tail -n1 | cut -f1)
  echo "gpu-check --pack: $CARRY: $(ls "$CARRY" | tr '\n' ' ')($((carry / 1024 / 1024)) MiB); with the tracked tree" \
    "$(((tree + carry) / 1024 / 1024)) MiB of the device tool's 64 MiB"
  [ $((tree + carry)) -lt $((64 * 1024 * 1024)) ] || { echo "gpu-check --pack: over 64 MiB" >&2; exit 2; }
  exit 0
fi

# Every step has its own limit, and all of them one deadline: the whole script ends within 7.5 minutes.
DEADLINE=$(($(date +%s) + ${GPU_CHECK_SECONDS:-450}))
BIN=""
if [ "${1:-}" = "--bin" ]; then BIN=$2; fi
W=${OUT:-${GPU_CHECK_OUT:-/tmp/gpu-check}}
mkdir -p "$W"
T=$(mktemp -d /tmp/gpu-check.XXXXXX)
L=$T/logs # one output file per step; $W gets only gpu-check.log (all of them), table.md and parity-cuda.json
mkdir -p "$L"
LOG=$W/gpu-check.log
: >"$LOG"
say() { echo "gpu-check: $*" | tee -a "$LOG"; }
die() {
  say "$*"
  exit 2
}
now() { date +%s.%N; }
unxz() { # FILE.xz OUT (xz, else python3's lzma)
  if command -v xz >/dev/null 2>&1; then xz -d -c "$1" >"$2"; else
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2"
  fi
}

# The binary (and a carried ORT library).
if [ -z "$BIN" ]; then
  if [ -f "$CARRY/adaptir.xz" ]; then
    unxz "$CARRY/adaptir.xz" "$T/adaptir" && chmod +x "$T/adaptir" && BIN=$T/adaptir
  elif [ -x "$ROOT/target-cuda/release/adaptir" ]; then
    BIN=$ROOT/target-cuda/release/adaptir
  fi
fi
[ -n "$BIN" ] && [ -x "$BIN" ] || die "no CUDA binary: build it with scripts/build-cuda.sh (then --pack to carry it)"
if [ -z "${ORT_DYLIB_PATH:-}" ] && [ -f "$CARRY/ort-gpu/libonnxruntime.so.1.31.1.xz" ]; then
  # The carried ONNX Runtime CUDA build (scripts/pack-ort-gpu.py): ORT loads its providers from the library's folder.
  mkdir -p "$T/ort-gpu"
  for f in "$CARRY"/ort-gpu/*.xz; do unxz "$f" "$T/ort-gpu/$(basename "${f%.xz}")"; done
  export ORT_DYLIB_PATH=$T/ort-gpu/libonnxruntime.so.1.31.1
elif [ -z "${ORT_DYLIB_PATH:-}" ] && [ -f "$CARRY/libonnxruntime.so.1.31.1.xz" ] && ! ls .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1 >/dev/null 2>&1; then
  unxz "$CARRY/libonnxruntime.so.1.31.1.xz" "$T/libonnxruntime.so.1.31.1"
  export ORT_DYLIB_PATH=$T/libonnxruntime.so.1.31.1
fi

# The CUDA libraries the binary was linked against (libcudart, libcublas(Lt), libcurand, libnvrtc): from the
# environment, CUDA's own folder, or a Python environment's NVIDIA wheels (PyTorch's cu13 ones).
missing() { ldd "$BIN" 2>/dev/null | awk '/not found/ { print $1 }'; }
if [ -n "$(missing)" ] || [ -d "$T/ort-gpu" ]; then # (the ORT CUDA build needs cuDNN, cuFFT, ... too)
  dirs=$(python3 - <<'EOF' 2>/dev/null
import glob, os, site, sys
roots = set(site.getsitepackages() + [site.getusersitepackages()] + [p for p in sys.path if p.endswith("site-packages")])
seen = []
for r in sorted(roots):
    for lib in glob.glob(os.path.join(r, "nvidia", "**", "lib"), recursive=True):
        if lib not in seen:
            seen.append(lib)
print(":".join(seen))
EOF
  )
  export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
if [ -n "$(missing)" ]; then die "the binary cannot start, missing: $(missing | tr '\n' ' ')(need CUDA 13 libraries)"; fi

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
  | sed 's/^/gpu: /' | tee -a "$LOG"
say "binary $BIN ($("$BIN" --version)), $(nproc) CPU cores, $(uname -r)"
say "ONNX Runtime library: ${ORT_DYLIB_PATH:-adaptir's search (.venv/, then python3's site-packages)}"
say "CUDA libraries: $(ldd "$BIN" | awk '/cublas.so|cudart|nvrtc|curand/ { print $3 }' | tr '\n' ' ')"
if [ -d "$T/ort-gpu" ]; then
  say "ORT CUDA provider: needs $(ldd "$T/ort-gpu/libonnxruntime_providers_cuda.so" | awk '/not found/ { print $1 " (not found)" }' | tr '\n' ' ')cuDNN $(ls $(echo "${LD_LIBRARY_PATH:-}" | tr ':' ' ') 2>/dev/null | grep 'libcudnn.so' | head -n1)"
fi

run() { # name timeout cmd... : log the output, keep the exit code (124: out of time)
  local name=$1 limit=$2
  shift 2
  local left=$((DEADLINE - $(date +%s)))
  [ "$left" -lt "$limit" ] && limit=$left
  echo "\$ $*" >>"$LOG"
  if [ "$limit" -lt 5 ]; then
    echo "skipped: the script's deadline has passed" | tee "$L/$name.out" >>"$LOG"
    echo "[$name: exit 124]" >>"$LOG"
    return 124
  fi
  timeout "$limit" "$@" >"$L/$name.out" 2>&1
  local rc=$?
  cat "$L/$name.out" >>"$LOG"
  echo "[$name: exit $rc]" >>"$LOG"
  return $rc
}
status=0
median_ms() { python3 -c 'import json,sys; print("%.3f" % json.load(open(sys.argv[1]))["median_ms"])' "$1"; } # ort-latency --json

# 1. Parity on CUDA.
run parity-cuda 120 "$BIN" parity --device cuda --json
parity_rc=$?
case $parity_rc in 0) ;; 1) status=1 ;; *) status=2 ;; esac
cp "$L/parity-cuda.out" "$W/parity-cuda.json" 2>/dev/null

# 2. A tiny backbone (CPU, 1 step) and AdaptIR training on CUDA and on the CPU. Time per step = the difference of
# two runs' wall times (S1 and S2 steps) / (S2 - S1): process start, loading, NVRTC and cuBLAS warm-up cancel.
DATA=$ROOT/fixtures/images/set5
run pretrain 120 "$BIN" pretrain --preset ipt-tiny --data "$DATA" --steps 1 --batch 2 --out "$T/bb.safetensors" \
  --eval-every 1000 --checkpoint-every 1000 || say "pretrain failed (see $LOG)"
S1=2
S2=22
BATCH=4
declare -A step_ms
for dev in cuda cpu; do
  ok=1
  walls=()
  # Untimed: the first CUDA run JIT-compiles candle's PTX for the card (cached by the driver after that).
  run "train-$dev-warmup" 150 "$BIN" train --method adaptir --task denoise30 --data "$DATA" --backbone "$T/bb.safetensors" \
    --preset ipt-tiny --steps 1 --batch $BATCH --eval-every 100000 --checkpoint-every 100000 \
    --out "$T/adapter-$dev-warmup.safetensors" --device $dev || ok=0
  for s in $S1 $S2; do
    t0=$(now)
    run "train-$dev-$s" 150 "$BIN" train --method adaptir --task denoise30 --data "$DATA" --backbone "$T/bb.safetensors" \
      --preset ipt-tiny --steps $s --batch $BATCH --eval-every 100000 --checkpoint-every 100000 \
      --out "$T/adapter-$dev-$s.safetensors" --device $dev || ok=0
    walls+=("$t0" "$(now)")
  done
  if [ $ok = 1 ]; then
    step_ms[$dev]=$(python3 -c 'import sys; a,b,c,d=map(float,sys.argv[1:5]); print("%.1f" % (((d-c)-(b-a))*1000/int(sys.argv[5])))' \
      "${walls[@]}" $((S2 - S1)))
  else
    step_ms[$dev]="failed"
    [ $status = 2 ] || status=1
  fi
done

# 2b. Resume on CUDA (checkpoint tensors and AdamW moments moved to the device): interrupted after half the
# steps and resumed must end where the uninterrupted run ends (same loss line).
resume="not run"
if [ "${step_ms[cuda]}" != failed ]; then
  H=$((S2 / 2))
  if run train-cuda-interrupted 120 "$BIN" train --method adaptir --task denoise30 --data "$DATA" --backbone "$T/bb.safetensors" \
    --preset ipt-tiny --steps $S2 --stop-after $H --batch $BATCH --eval-every 100000 --checkpoint-every 100000 \
    --out "$T/adapter-resumed.safetensors" --device cuda \
    && run train-cuda-resumed 120 "$BIN" train --method adaptir --task denoise30 --data "$DATA" --backbone "$T/bb.safetensors" \
      --preset ipt-tiny --steps $S2 --batch $BATCH --eval-every 100000 --checkpoint-every 100000 \
      --out "$T/adapter-resumed.safetensors" --device cuda --resume; then
    a=$(sed -n 's/^finished: .*, loss \([0-9.e+-]*\),.*/\1/p' "$L/train-cuda-resumed.out" | head -n1)
    b=$(sed -n 's/^finished: .*, loss \([0-9.e+-]*\),.*/\1/p' "$L/train-cuda-$S2.out" | head -n1)
    if [ -n "$a" ] && [ "$a" = "$b" ]; then resume="same loss ($a)"; else resume="DIFFERENT: $a vs $b"; [ $status = 2 ] || status=1; fi
  else
    resume="FAILED (see the log)"
    [ $status = 2 ] || status=1
  fi
fi

# 3. Export (the CUDA-trained adapter), validate and time ONNX Runtime on the CPU and CUDA providers.
declare -A ort_ms ort_val
ADAPTER=$T/adapter-cuda-$S2.safetensors
[ -f "$ADAPTER" ] || ADAPTER=$T/adapter-cpu-$S2.safetensors
if run export 120 "$BIN" export --adapter "$ADAPTER" --backbone "$T/bb.safetensors" -o "$T/model.onnx" \
  --golden "$T/golden.safetensors"; then
  for ep in cpu cuda; do
    strict=()
    [ $ep = cuda ] && strict=(--strict-ep)
    if run "validate-$ep" 120 "$BIN" validate "$T/model.onnx" --backbone "$T/bb.safetensors" --adapter "$ADAPTER" \
      --ep $ep "${strict[@]}"; then
      ort_val[$ep]=PASS
      if run "latency-$ep" 120 "$BIN" ort-latency "$T/model.onnx" --golden "$T/golden.safetensors" --ep $ep \
        "${strict[@]}" --warmup 5 --iters 50 --json; then
        ort_ms[$ep]=$(median_ms "$L/latency-$ep.out")
      else
        ort_ms[$ep]="failed"
      fi
    else
      rc=$?
      if [ $rc = 1 ]; then
        ort_val[$ep]=FAIL
        [ $status = 2 ] || status=1
        ort_ms[$ep]="n/a"
      elif [ $ep = cuda ] && grep -q -- '--strict-ep' "$L/validate-$ep.out"; then
        # The provider started but some nodes would run on the CPU: say which, and validate and time it that way.
        why=$(grep -m1 -- '--strict-ep' "$L/validate-$ep.out" | cut -c1-300)
        if run "validate-$ep-fallback" 120 "$BIN" validate "$T/model.onnx" --backbone "$T/bb.safetensors" \
          --adapter "$ADAPTER" --ep $ep; then
          ort_val[$ep]="PASS without --strict-ep (strict: $why)"
          run "latency-$ep" 120 "$BIN" ort-latency "$T/model.onnx" --golden "$T/golden.safetensors" --ep $ep \
            --warmup 5 --iters 50 --json \
            && ort_ms[$ep]=$(median_ms "$L/latency-$ep.out")
        else
          ort_val[$ep]="FAIL (strict: $why)"
          [ $status = 2 ] || status=1
        fi
      else
        ort_val[$ep]="n/a: $(grep -m1 '^error' "$L/validate-$ep.out" | cut -c1-220)"
        ort_ms[$ep]="n/a"
      fi
    fi
  done
else
  [ $status = 2 ] || status=1
fi

# 3b. The fp16 export on CUDA (the usual GPU deployment): validate under F16_REL with --strict-ep, and time it.
fp16_val="not run"
fp16_ms="n/a"
ort_cuda_runs=0 # the CUDA provider started (the f32 validation passed or failed on numbers)
case "${ort_val[cuda]:-}" in PASS* | FAIL*) ort_cuda_runs=1 ;; esac
if [ -f "$ADAPTER" ] && [ $ort_cuda_runs = 1 ] && run export-fp16 60 "$BIN" export --adapter "$ADAPTER" \
  --backbone "$T/bb.safetensors" --fp16 -o "$T/model16.onnx"; then
  if run validate-fp16-cuda 90 "$BIN" validate "$T/model16.onnx" --backbone "$T/bb.safetensors" --adapter "$ADAPTER" \
    --ep cuda --strict-ep; then
    fp16_val="PASS ($(sed -n 's/.*max_abs \([0-9.e+-]*\) .*/max_abs \1/p' "$L/validate-fp16-cuda.out" | head -n1))"
    run latency-fp16-cuda 60 "$BIN" ort-latency "$T/model16.onnx" --golden "$T/golden.safetensors" --ep cuda \
      --strict-ep --warmup 5 --iters 50 --json \
      && fp16_ms=$(median_ms "$L/latency-fp16-cuda.out")
  else
    fp16_val="FAIL or n/a: $(grep -m1 -E '^error|^output' "$L/validate-fp16-cuda.out" | cut -c1-200)"
    [ $status = 2 ] || status=1
  fi
fi

# 3c. The TensorRT-target export (standard ops only, no f64, checked against TensorRT's operator matrix at export),
# fp32 and fp16, and the whole-image export, on ONNX Runtime's CUDA provider with --strict-ep (TensorRT itself
# cannot be installed in this workplace; docs/compiler.md).
declare -A trt_val
for variant in fp32 fp16 whole; do
  trt_val[$variant]="not run"
  flags=()
  case $variant in fp16) flags=(--fp16) ;; whole) flags=(--whole-image) ;; esac
  if [ -f "$ADAPTER" ] && [ $ort_cuda_runs = 1 ] && run "export-trt-$variant" 60 "$BIN" export --adapter "$ADAPTER" \
    --backbone "$T/bb.safetensors" --target tensorrt "${flags[@]}" -o "$T/trt-$variant.onnx"; then
    if run "validate-trt-$variant" 90 "$BIN" validate "$T/trt-$variant.onnx" --backbone "$T/bb.safetensors" \
      --adapter "$ADAPTER" --ep cuda --strict-ep; then
      trt_val[$variant]="PASS ($(sed -n 's/.*max_abs \([0-9.e+-]*\) .*/max_abs \1/p' "$L/validate-trt-$variant.out" | head -n1))"
    else
      trt_val[$variant]="FAIL or n/a: $(grep -m1 -E '^error|^output' "$L/validate-trt-$variant.out" | cut -c1-200)"
      [ $status = 2 ] || status=1
    fi
  fi
done

# 5. The released size, ipt-base (randomly initialised by one pre-training step on CUDA: times do not depend on
# the weights), if the deadline leaves room: AdaptIR train step at the issue-4 benchmark's shape (batch 16, 48x48;
# CUDA only: the CPU figure is examples/bench_train's, BENCHMARKS.md) and ORT latency of its export, CUDA vs CPU.
declare -A base_ms
if [ $((DEADLINE - $(date +%s))) -gt 150 ] && [ "${step_ms[cuda]}" != failed ]; then
  if run pretrain-base 90 "$BIN" pretrain --preset ipt-base --data "$DATA" --steps 1 --batch 1 --device cuda \
    --out "$T/base.safetensors" --eval-every 1000 --checkpoint-every 1000; then
    walls=()
    ok=1
    for s in 2 8; do
      t0=$(now)
      run "train-base-cuda-$s" 120 "$BIN" train --method adaptir --task denoise30 --data "$DATA" \
        --backbone "$T/base.safetensors" --preset ipt-base --steps $s --batch 16 --eval-every 100000 \
        --checkpoint-every 100000 --out "$T/base-adapter-$s.safetensors" --device cuda || ok=0
      walls+=("$t0" "$(now)")
    done
    [ $ok = 1 ] && base_ms[train]=$(python3 -c 'import sys; a,b,c,d=map(float,sys.argv[1:5]); print("%.1f" % (((d-c)-(b-a))*1000/6))' \
      "${walls[@]}")
    if [ -f "$T/base-adapter-8.safetensors" ] && run export-base 90 "$BIN" export --adapter "$T/base-adapter-8.safetensors" \
      --backbone "$T/base.safetensors" -o "$T/base.onnx" --golden "$T/base-golden.safetensors"; then
      if run validate-base-cuda 90 "$BIN" validate "$T/base.onnx" --backbone "$T/base.safetensors" \
        --adapter "$T/base-adapter-8.safetensors" --ep cuda --strict-ep; then
        base_ms[val]=PASS
      else
        base_ms[val]="FAIL or n/a: $(grep -m1 -E '^error|^output|^FAIL' "$L/validate-base-cuda.out" | cut -c1-220)"
      fi
      for ep in cuda cpu; do
        run "latency-base-$ep" 90 "$BIN" ort-latency "$T/base.onnx" --golden "$T/base-golden.safetensors" --ep $ep \
          --warmup 3 --iters 20 --json \
          && base_ms[$ep]=$(median_ms "$L/latency-base-$ep.out")
      done
    fi
  fi
fi

# 4. The table.
{
  echo
  echo "| measure | CUDA | CPU | CPU / CUDA |"
  echo "|---|---|---|---|"
  ratio() { python3 -c "import sys; a,b=sys.argv[1:]; print('%.1fx' % (float(b)/float(a)))" "$1" "$2" 2>/dev/null || echo "-"; }
  echo "| AdaptIR train step, ipt-tiny, batch $BATCH, 48x48 (ms; ($S2-$S1)-step difference) | ${step_ms[cuda]} | ${step_ms[cpu]} | $(ratio "${step_ms[cuda]}" "${step_ms[cpu]}") |"
  loss() { sed -n 's/^finished: .*, loss \([0-9.e+-]*\),.*/\1/p' "$L/train-$1-$S2.out" 2>/dev/null | head -n1; }
  echo "| AdaptIR training loss after $S2 steps (same seed, data and initial weights) | $(loss cuda) | $(loss cpu) | |"
  echo "| AdaptIR training on CUDA interrupted at step $((S2 / 2)) and resumed, vs uninterrupted | $resume | | |"
  echo "| ORT run, exported ipt-tiny + AdaptIR, batch 2 (median ms of 50) | ${ort_ms[cuda]:-n/a} | ${ort_ms[cpu]:-n/a} | $(ratio "${ort_ms[cuda]:-x}" "${ort_ms[cpu]:-x}") |"
  echo "| ORT validate vs candle (CUDA with --strict-ep) | ${ort_val[cuda]:-n/a} | ${ort_val[cpu]:-n/a} | |"
  echo "| fp16 export of the same model on CUDA: validate (F16_REL, --strict-ep); ORT median ms of 50 | $fp16_val; $fp16_ms | | |"
  echo "| --target tensorrt export on CUDA (--strict-ep): fp32 / fp16 / whole-image | ${trt_val[fp32]} / ${trt_val[fp16]} / ${trt_val[whole]} | | |"
  echo "| ipt-base AdaptIR train step, batch 16, 48x48 (ms; (8-2)-step difference) | ${base_ms[train]:-n/a} | see BENCHMARKS.md (bench_train) | |"
  echo "| ipt-base ORT validate vs candle (CUDA with --strict-ep) | ${base_ms[val]:-n/a} | | |"
  echo "| ORT run, exported ipt-base + AdaptIR, batch 2, 48x48 (median ms of 20) | ${base_ms[cuda]:-n/a} | ${base_ms[cpu]:-n/a} | $(ratio "${base_ms[cuda]:-x}" "${base_ms[cpu]:-x}") |"
  echo
  python3 - "$W/parity-cuda.json" 2>/dev/null <<'EOF' || echo "parity on CUDA: could not run (exit $parity_rc): $(grep -m1 '^error' "$L/parity-cuda.out")"
import json, sys
r = json.load(open(sys.argv[1]))
f = lambda v: "-" if v is None else "%.2e" % v
print("| parity on %s (%.1f s): case | vs torch | bound | vs CPU | bound | |" % (r["device"], r["seconds"]))
print("|---|---|---|---|---|---|")
for row in r["rows"]:
    print("| %s | %s | %s | %s | %s | %s |" % (row["case"], f(row["vs_torch"]), f(row["torch_bound"]),
          f(row["vs_cpu"]), f(row["cpu_bound"]), "ok" if row["passed"] else "FAIL"))
print("| **parity on CUDA** | | | | | %s |" % ("all pass" if r["passed"] else "FAILED"))
EOF
} | tee "$W/table.md" | tee -a "$LOG"
rm -rf "$T"
say "done (exit $status); logs in $W"
exit $status
