#!/usr/bin/env bash
# The project's test command (README quick start; .ci/run calls it): install ONNX Runtime 1.31.1 into .venv/
# (idempotent, needs python3), then build once in release and run every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-ort.sh
cargo test --release --workspace "$@"
