#!/usr/bin/env bash
# Issue 17 item 3 at ipt-base's size, where the projections and FFNs dominate the time (ipt-tiny's small GEMMs do
# not): the latency of the f32 export, its static INT8 file and OpenVINO's bf16 inference, against the f32 file,
# in ONNX Runtime and OpenVINO. Latency only: the model is ipt-base at its seeded initialisation after one
# pre-training step, with an AdaptIR adapter after one training step (its gates moved off zero), so quality is
# not measured here (bash scripts/int8_eval.sh does that on the shipped models).
#
#   bash scripts/int8_eval_base.sh [WORK_DIR]      (default /tmp/int8-base; THREADS, ROUNDS, RUNS in the env)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${ADAPTIR:-target/release/adaptir}
WORK=${1:-/tmp/int8-base}
DATA=../shared/data
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
RUNS=${RUNS:-10}
[ -x "$BIN" ] || cargo build --release
mkdir -p "$WORK/clean"
for f in $(ls "$DATA/train/bsds400" | sort | head -8); do cp "$DATA/train/bsds400/$f" "$WORK/clean/"; done
echo "== $(bash scripts/machine.sh)"
[ -f "$WORK/backbone.safetensors" ] || "$BIN" pretrain --preset ipt-base --data "$WORK/clean" --steps 1 --batch 1 \
    --eval-every 1000 --checkpoint-every 1000 --out "$WORK/backbone.safetensors" > /dev/null
[ -f "$WORK/denoise30.safetensors" ] || "$BIN" train --method adaptir --task denoise30 --data "$WORK/clean" \
    --backbone "$WORK/backbone.safetensors" --steps 1 --batch 1 --lr 1e-2 --eval-every 1000 \
    --out "$WORK/denoise30.safetensors" > /dev/null
A=$WORK/denoise30.safetensors
"$BIN" degrade --task noise30 -o "$WORK/calib" "$WORK/clean" > /dev/null
"$BIN" export --adapter "$A" -o "$WORK/f32.onnx" --golden "$WORK/golden.safetensors" | grep -E '^wrote'
"$BIN" export --adapter "$A" -o "$WORK/int8.onnx" --int8 --calibrate "$WORK/calib" | grep -E '^(wrote|int8)'
ms() { # runtime, file, extra flags: the median latency of RUNS runs on the golden's inputs (batch 2)
    local rt=$1 f=$2; shift 2
    { "$BIN" validate "$f" "$@" --golden "$WORK/golden.safetensors" --runtime "$rt" --threads "$THREADS" \
        --latency-runs "$RUNS" --json || true; } | python3 -c 'import json,sys; print(json.load(sys.stdin)["runtimes"][0]["latency_ms"])'
}
echo "-- ipt-base + AdaptIR, denoise30, batch 2, $THREADS threads, $ROUNDS rounds (median of $RUNS runs each)"
for r in $(seq "$ROUNDS"); do
    of=$(ms ort "$WORK/f32.onnx"); oq=$(ms ort "$WORK/int8.onnx")
    vf=$(ms openvino "$WORK/f32.onnx"); vb=$(ms openvino "$WORK/f32.onnx" --precision bf16); vq=$(ms openvino "$WORK/int8.onnx")
    python3 -c "print(f'round $r: ORT f32 {$of:.1f} int8 {$oq:.1f} (ratio {$oq/$of:.3f}); OpenVINO f32 {$vf:.1f} bf16 {$vb:.1f} int8 {$vq:.1f} (ratios {$vb/$vf:.3f}, {$vq/$vf:.3f}) ms')"
done
echo "== done $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
