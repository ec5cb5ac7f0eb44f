#!/usr/bin/env bash
# Install the C++ runtimes of adaptir's runtime matrix (src/runtime) into the project-local environment `.venv/`.
#
# What it installs: the `onnxruntime==1.31.1` PyPI wheel, whose `onnxruntime/capi/libonnxruntime.so.1.31.1` is the
# library the `ort` crate loads at run time (feature `load-dynamic`; nothing is downloaded at build time); the
# `openvino==2026.4.1` wheel, whose `openvino/libs/libopenvino_c.so.2641` (versioned only) is the library the
# `openvino` crate loads at run time (feature `runtime-linking`; `adaptir validate --runtime openvino`); and the
# `onnx` python package of the version whose `onnx.proto` is vendored in proto/ (for `onnx.checker` in tests).
# tract, the third runtime, is a Rust crate: nothing to install.
#
#   scripts/setup-ort.sh            CPU wheel (`onnxruntime`)
#   ADAPTIR_ORT_GPU=1 scripts/setup-ort.sh   CUDA wheel (`onnxruntime-gpu`, same version; for the `cuda` feature)
#
# Idempotent: a second run with everything in place does not touch the network.
# Discovery order used by adaptir: $ORT_DYLIB_PATH (src/runtime/library.rs) or $OPENVINO_LIB (src/runtime/openvino.rs),
# then this .venv/, then python3's site-packages.
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=1.31.1
ONNX_VERSION=1.23.2
OPENVINO_VERSION=2026.4.1
PYTHON=${PYTHON:-python3}
PKG=onnxruntime
if [ "${ADAPTIR_ORT_GPU:-0}" = 1 ]; then PKG=onnxruntime-gpu; fi

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "setup-ort: $PYTHON not found; install Python 3.10+ (e.g. apt-get install python3 python3-venv)" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check "$PKG==$ORT_VERSION" "onnx==$ONNX_VERSION" \
  "openvino==$OPENVINO_VERSION"

lib=$(ls .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so."$ORT_VERSION" 2>/dev/null | head -n1 || true)
if [ -z "$lib" ]; then
  echo "setup-ort: $PKG==$ORT_VERSION installed but libonnxruntime.so.$ORT_VERSION is missing under .venv/" >&2
  exit 2
fi
echo "setup-ort: ONNX Runtime $ORT_VERSION ($PKG) at $lib"

ovlib=$(ls .venv/lib/python3*/site-packages/openvino/libs/libopenvino_c.so.* 2>/dev/null | head -n1 || true)
if [ -z "$ovlib" ]; then
  echo "setup-ort: openvino==$OPENVINO_VERSION installed but libopenvino_c.so.* is missing under .venv/" >&2
  exit 2
fi
echo "setup-ort: OpenVINO $OPENVINO_VERSION at $ovlib"
