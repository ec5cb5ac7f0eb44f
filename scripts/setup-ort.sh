#!/usr/bin/env bash
# Install ONNX Runtime for adaptir's runtime (src/runtime) into the project-local environment `.venv/`.
#
# What it installs: the `onnxruntime==1.31.1` PyPI wheel, whose `onnxruntime/capi/libonnxruntime.so.1.31.1` is the
# library the `ort` crate loads at run time (feature `load-dynamic`; nothing is downloaded at build time), and the
# `onnx` python package of the version whose `onnx.proto` is vendored in proto/ (for `onnx.checker` in tests).
#
#   scripts/setup-ort.sh            CPU wheel (`onnxruntime`)
#   ADAPTIR_ORT_GPU=1 scripts/setup-ort.sh   CUDA wheel (`onnxruntime-gpu`, same version; for the `cuda` feature)
#
# Idempotent: a second run with everything in place does not touch the network.
# Discovery order used by adaptir (src/runtime/library.rs): $ORT_DYLIB_PATH, this .venv/, python3's site-packages.
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=1.31.1
ONNX_VERSION=1.23.2
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
.venv/bin/python -m pip install --quiet --disable-pip-version-check "$PKG==$ORT_VERSION" "onnx==$ONNX_VERSION"

lib=$(ls .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so."$ORT_VERSION" 2>/dev/null | head -n1 || true)
if [ -z "$lib" ]; then
  echo "setup-ort: $PKG==$ORT_VERSION installed but libonnxruntime.so.$ORT_VERSION is missing under .venv/" >&2
  exit 2
fi
echo "setup-ort: ONNX Runtime $ORT_VERSION ($PKG) at $lib"
