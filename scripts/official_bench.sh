#!/usr/bin/env bash
# Issue 17: ours vs the official AdaptIR code, same machine, same run (BENCHMARKS.md "Issue 17").
#
#   scripts/official_bench.sh OFFICIAL_DIR [WORK_DIR]
#
# OFFICIAL_DIR: a checkout of github.com/csguoh/AdaptIR outside this repository (e.g. the search tool's
# `fetch github:csguoh/AdaptIR`, then `git clone <its mirror> /tmp/adaptir-official`). Nothing of it is copied
# here: scripts/official_bench.py imports its net/ipt.py by path.
# WORK_DIR (default /tmp/official-bench): the weight file, the four ONNX files, logs and JSON results.
#
# Stages (STAGES="weights export train ort count" by default; each can be rerun alone):
#   weights  one random ipt-base + perturbed AdaptIR, official keys (bench_official --write-weights), and ours
#            imported from it (adaptir import): both tools run the same weights
#   export   ours: adaptir export (default portable target) with AdaptIR and the backbone alone; official:
#            torch.onnx.export(dynamo=True), dynamic batch, with AdaptIR and with every AdaptIR replaced by zero
#   train    one adapter-only training step, batch 16, 48x48, 2 threads: PyTorch first, then bench_train with
#            PyTorch's figures (--torch-json) and the same weights (--weights); then both with denormals flushed
#   ort      all four files in one ONNX Runtime process, interleaved, 2 intra-op threads, batch 1 and 16; then
#            again with ONNX Runtime's denormal_as_zero in every session
#   count    node counts by op type of each file and of ONNX Runtime's optimized model
#
# Environment: VENV (default /tmp/official-venv; reused if it imports torch and onnxscript, else created and
# filled from PyPI: torch safetensors numpy onnx onnxscript), ORT_PYTHON (default .venv/bin/python: the
# onnxruntime wheel scripts/setup-ort.sh installs), STEPS (3), PAIRS (15 rounds at batch 1), PAIRS16 (7),
# THREADS (2), CARGO_ARGS (extra cargo build arguments for our side, e.g. CARGO_ARGS=--no-default-features for
# the AVX2 kernels on an AVX-512 CPU; such a build goes to its own target/args<ARGS, other characters as -> so that
# the default one is kept for an A/B in the same session). Timings are from one run; the machine and its load go with them in BENCHMARKS.md.
set -euo pipefail

OFFICIAL=$(realpath "${1:?usage: scripts/official_bench.sh OFFICIAL_DIR [WORK_DIR]}")
WORK=${2:-/tmp/official-bench}
VENV=${VENV:-/tmp/official-venv}
ORT_PYTHON=${ORT_PYTHON:-.venv/bin/python}
STAGES=${STAGES:-weights export train ort count}
STEPS=${STEPS:-3}
PAIRS=${PAIRS:-15}
PAIRS16=${PAIRS16:-7}
THREADS=${THREADS:-2}
cd "$(dirname "$0")/.."
HERE=$PWD
PY=$VENV/bin/python
BENCH=scripts/official_bench.py

[ -f "$OFFICIAL/net/ipt.py" ] || { echo "$OFFICIAL/net/ipt.py: not an AdaptIR checkout" >&2; exit 2; }
mkdir -p "$WORK/ours"
if ! "$PY" -c 'import torch, onnxscript, safetensors' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install torch safetensors numpy onnx onnxscript
fi
CARGO_ARGS=${CARGO_ARGS:-}
TARGET=target
if [ -n "$CARGO_ARGS" ]; then TARGET=target/args$(printf '%s' "$CARGO_ARGS" | tr -c 'A-Za-z0-9' '-'); fi
# shellcheck disable=SC2086 # CARGO_ARGS is a list of arguments
cargo build --release --bin adaptir --example bench_official --example bench_train \
    $CARGO_ARGS ${CARGO_ARGS:+--target-dir "$TARGET"}
ADAPTIR=$HERE/$TARGET/release/adaptir
has() { case " $STAGES " in *" $1 "*) return 0 ;; esac; return 1; }
echo "== $(bash scripts/machine.sh)"
echo "== torch $("$PY" -c 'import torch; print(torch.__version__)'), official $(git -C "$OFFICIAL" rev-parse --short HEAD 2>/dev/null || echo '?'), ours $(git rev-parse --short HEAD) cargo args [${CARGO_ARGS}]"

if has weights; then
    $TARGET/release/examples/bench_official --write-weights "$WORK/weights.safetensors"
    rm -f "$WORK/ours/adapter.safetensors" "$WORK/ours/backbone.safetensors"
    "$ADAPTIR" import --task denoise30 -o "$WORK/ours/adapter.safetensors" "$WORK/weights.safetensors"
fi

if has export; then
    "$ADAPTIR" export --adapter "$WORK/ours/adapter.safetensors" -o "$WORK/ours.onnx"
    "$ADAPTIR" export --backbone "$WORK/ours/backbone.safetensors" --task denoise30 -o "$WORK/ours-backbone.onnx"
    "$PY" "$BENCH" export "$OFFICIAL" "$WORK/weights.safetensors" "$WORK/official.onnx"
    "$PY" "$BENCH" export "$OFFICIAL" "$WORK/weights.safetensors" "$WORK/official-backbone.onnx" --no-adapter
fi

if has train; then
    "$PY" "$BENCH" train "$OFFICIAL" "$WORK/weights.safetensors" --batch 16 --steps "$STEPS" \
        --threads "$THREADS" --json "$WORK/torch-train.json"
    $TARGET/release/examples/bench_train --steps "$STEPS" --batch 16 --task denoise30 \
        --weights "$WORK/weights.safetensors" --torch-json "$WORK/torch-train.json"
    # Both again with denormals flushed (torch.set_flush_denormal / --flush-denormals): attention that underflows
    # costs each side differently, so the default ratio alone says little.
    "$PY" "$BENCH" train "$OFFICIAL" "$WORK/weights.safetensors" --batch 16 --steps "$STEPS" \
        --threads "$THREADS" --flush-denormal --json "$WORK/torch-train-flush.json"
    $TARGET/release/examples/bench_train --steps "$STEPS" --batch 16 --task denoise30 \
        --weights "$WORK/weights.safetensors" --torch-json "$WORK/torch-train-flush.json" --flush-denormals
fi

if has ort; then
    $TARGET/release/examples/bench_official --ours "$WORK/ours.onnx" --official "$WORK/official.onnx" \
        --ours-backbone "$WORK/ours-backbone.onnx" --official-backbone "$WORK/official-backbone.onnx" \
        --threads "$THREADS" --pairs "$PAIRS" --pairs16 "$PAIRS16" --json "$WORK/ort.json"
    # The same with denormals flushed in every session: what is left once neither file pays for them.
    $TARGET/release/examples/bench_official --ours "$WORK/ours.onnx" --official "$WORK/official.onnx" \
        --ours-backbone "$WORK/ours-backbone.onnx" --official-backbone "$WORK/official-backbone.onnx" \
        --threads "$THREADS" --pairs "$PAIRS" --pairs16 "$PAIRS16" --denormal-as-zero --json "$WORK/ort-daz.json"
fi

if has count; then
    "$ORT_PYTHON" "$BENCH" count "$WORK/ours.onnx" "$WORK/official.onnx" "$WORK/ours-backbone.onnx" \
        "$WORK/official-backbone.onnx" --threads "$THREADS" --json "$WORK/counts.json"
fi
echo "== done $(date -u +%FT%TZ), load: $(cut -d' ' -f1-3 /proc/loadavg)"
