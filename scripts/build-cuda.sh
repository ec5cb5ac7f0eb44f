#!/usr/bin/env bash
# Build the CUDA binary `target-cuda/release/adaptir` (cargo feature `cuda`) on a machine WITHOUT a GPU or a CUDA
# toolkit, so that it can be carried to a GPU machine that has no Rust toolchain (see scripts/gpu-check.sh).
#
# How (details and reasons: docs/gpu.md):
#   1. `.cuda/venv`: NVIDIA's CUDA 13.0 wheels from PyPI (nvcc, crt, nvvm, cudart, cccl; ~105 MB), pinned to 13.0.x
#      because the lent GPU machines run driver 580 (CUDA 13.0), which cannot load code from a newer nvcc, and
#      cudarc 0.19.10 refuses to build against 13.5.
#   2. `.cuda/toolkit`: a toolkit folder (bin, include, nvvm -> the wheels' nvidia/cu13; lib/libcudart.so).
#   3. `.cuda/toolkit/lib`: LINK-ONLY stub libraries (libcuda.so.1, libcublas.so.13, libcublasLt.so.13,
#      libcurand.so.10, libnvrtc.so.13) generated with gcc from the symbols that cudarc's `sys/mod.rs` declares,
#      with the real SONAMEs and symbol version nodes; every function returns 34 (CUDA_ERROR_STUB_LIBRARY). They only
#      satisfy the linker: the binary loads the real libraries on the GPU machine. NEVER ship or carry them.
#   4. `cargo build --release --features cuda --target-dir target-cuda`: a separate target dir, so the default CPU
#      build in target/ is never rebuilt with other features. CUDA_COMPUTE_CAP=90 (H100 / H200, sm_90a),
#      CUDARC_CUDA_VERSION=13000.
#
#   scripts/build-cuda.sh                      build (cold: ~9 min on 2 cores, most of it nvcc on candle's kernels)
#   CUDA_COMPUTE_CAP=80 scripts/build-cuda.sh  another GPU generation (A100)
#   CARGO_BUILD_JOBS=1 nice -n 10 scripts/build-cuda.sh   on a shared machine
#
# Idempotent: with everything in place it touches neither the network nor the toolkit folder.
# Needs: python3 (venv + pip, network for the first run), gcc/g++ (nvcc's host compiler, the stubs), cargo.
# The binary needs on the GPU machine: glibc >= 2.34 and the CUDA 13 libraries (libcudart, libcublas, libcublasLt,
# libcurand, libnvrtc: e.g. a PyTorch cu13 venv's site-packages/nvidia/cu13/lib on LD_LIBRARY_PATH) and the driver.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

CUDA_DIR=${ADAPTIR_CUDA_DIR:-$ROOT/.cuda}
TARGET_DIR=${ADAPTIR_CUDA_TARGET_DIR:-$ROOT/target-cuda}
PYTHON=${PYTHON:-python3}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
WHEELS=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85)

die() {
  echo "build-cuda: $*" >&2
  exit 2
}
for tool in "$PYTHON" gcc g++ cargo; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (needed: python3 with venv, gcc, g++, cargo)"
done

# 1. The wheels.
stamp="$CUDA_DIR/venv/.adaptir-wheels"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "${WHEELS[*]}" ]; then
  [ -x "$CUDA_DIR/venv/bin/python" ] || "$PYTHON" -m venv "$CUDA_DIR/venv"
  echo "build-cuda: installing ${WHEELS[*]} into $CUDA_DIR/venv"
  "$CUDA_DIR/venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "${WHEELS[@]}"
  echo "${WHEELS[*]}" >"$stamp"
fi
CU13=$(ls -d "$CUDA_DIR"/venv/lib/python3*/site-packages/nvidia/cu13 2>/dev/null | head -n1 || true)
[ -n "$CU13" ] && [ -x "$CU13/bin/nvcc" ] || die "nvcc missing under $CUDA_DIR/venv (nvidia/cu13/bin/nvcc); delete $CUDA_DIR and rerun"
[ -f "$CU13/lib/libcudart.so.13" ] || die "libcudart.so.13 missing under $CU13/lib"

# 2. The toolkit folder.
TK=$CUDA_DIR/toolkit
mkdir -p "$TK/lib"
for d in bin include nvvm; do ln -sfn "$CU13/$d" "$TK/$d"; done
ln -sfn "$CU13/lib/libcudart.so.13" "$TK/lib/libcudart.so.13"
ln -sfn libcudart.so.13 "$TK/lib/libcudart.so"

# 3. Link-only stubs from the symbols cudarc declares (`load::<_F>("name")` in src/<module>/sys/mod.rs).
CUDARC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.10 2>/dev/null | head -n1 || true)
if [ -z "$CUDARC" ]; then
  cargo fetch --quiet
  CUDARC=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.10 2>/dev/null | head -n1 || true)
fi
[ -n "$CUDARC" ] || die "cudarc 0.19.10 sources not found in the cargo registry (run cargo fetch)"
stub() { # module soname version-node(or empty)
  local module=$1 soname=$2 node=$3 out="$TK/lib/$2" src="$TK/lib/.$2.c"
  [ -f "$out" ] && [ "$out" -nt "$CUDARC/src/$module/sys/mod.rs" ] && return 0
  grep -o 'load::<_F>("[A-Za-z0-9_]*")' "$CUDARC/src/$module/sys/mod.rs" | sed 's/.*("\(.*\)")/\1/' | sort -u |
    awk '{ printf "int %s(void) { return 34; }\n", $1 }' >"$src"
  local flags=(-shared -fPIC -o "$out" "$src" "-Wl,-soname,$soname")
  if [ -n "$node" ]; then
    printf '%s { global: *; };\n' "$node" >"$TK/lib/.$soname.map"
    flags+=("-Wl,--version-script=$TK/lib/.$soname.map")
  fi
  gcc "${flags[@]}"
  ln -sfn "$soname" "$TK/lib/${soname%%.so*}.so"
}
stub driver libcuda.so.1 ""
stub cublas libcublas.so.13 libcublas.so.13
stub cublaslt libcublasLt.so.13 libcublasLt.so.13
stub curand libcurand.so.10 libcurand.so.10
stub nvrtc libnvrtc.so.13 libnvrtc.so.13

# 4. The build.
export CUDA_ROOT=$TK CUDA_HOME=$TK CUDA_PATH=$TK CUDA_TOOLKIT_ROOT_DIR=$TK
export PATH=$TK/bin:$PATH
export CUDARC_CUDA_VERSION=13000
# Smaller binary to carry (the device tool carries at most 64 MiB); only affects target-cuda/.
export CARGO_PROFILE_RELEASE_STRIP=${CARGO_PROFILE_RELEASE_STRIP:-symbols}
echo "build-cuda: nvcc $("$TK/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), sm_${CUDA_COMPUTE_CAP}, target dir $TARGET_DIR"
start=$(date +%s)
cargo build --release --features cuda --target-dir "$TARGET_DIR" --bin adaptir
bin=$TARGET_DIR/release/adaptir
[ -x "$bin" ] || die "cargo finished but $bin is missing"
if readelf -d "$bin" | grep -E 'RPATH|RUNPATH' | grep -q "$CUDA_DIR"; then
  die "$bin has a run path into $CUDA_DIR (the stubs): it must not"
fi
size=$(stat -c %s "$bin")
echo "build-cuda: built $bin ($((size / 1024 / 1024)) MiB, $size bytes) in $(($(date +%s) - start)) s"
echo "build-cuda: needs at run time: $(readelf -d "$bin" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')"
[ "$size" -lt $((64 * 1024 * 1024)) ] || echo "build-cuda: WARNING: over the device tool's 64 MiB carry limit" >&2
