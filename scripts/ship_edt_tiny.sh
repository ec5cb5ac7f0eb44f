#!/usr/bin/env bash
# The shipped EDT model (issue 19, item 5): copy the finished edt-tiny pre-training into models/edt-tiny/, train its
# AdaptIR adapter for lr2-noise30 (x2 bicubic, then Gaussian noise sigma 30: a degradation the x2 head never saw),
# and evaluate backbone and adapter on held-out benchmark images; JSON results go to models/edt-tiny/eval/. These
# are the commands that produced the shipped files and the numbers of models/edt-tiny/MODEL_CARD.md.
# The pre-training itself: PROFILE=edt-tiny bash scripts/pretrain_long.sh start (runs/edt-tiny/).
# Usage (from the repo root): RAYON_NUM_THREADS=2 bash scripts/ship_edt_tiny.sh [STEPS] [BIN]
#   (defaults: 300, target/release/adaptir). PART=copy|adapter|backbone-eval|adapter-eval|validate|all (default
#   all); SETS (default "Set5 Set14"), SR2_SETS (the x2 head alone, default BSD100).
set -euo pipefail
STEPS=${1:-300}
BIN=${2:-target/release/adaptir}
D=../shared/data
M=models/edt-tiny
BB=$M/backbone.safetensors
CFG=$M/backbone.edt.json
PART=${PART:-all}
SETS=${SETS:-"Set5 Set14"}
mkdir -p $M/eval

if [ "$PART" = all ] || [ "$PART" = copy ]; then
  cp runs/edt-tiny/backbone.safetensors runs/edt-tiny/backbone.edt.json $M/
  cp runs/edt-tiny/backbone.curve.png $M/backbone.curve.png
fi
if [ "$PART" = all ] || [ "$PART" = adapter ]; then
  $BIN train --method adaptir --task lr2-noise30 --data $D/train/photos_hr --backbone $BB --config $CFG \
    --steps "$STEPS" --batch 8 --lr 1e-2 --seed 0 --flush-denormals --checkpoint-every 20 --eval-every 40 \
    --out $M/lr2-noise30.safetensors --resume
fi
# Held-out benchmark images: the x2 head against bicubic, and the adapter against the backbone alone on the same
# noisy inputs. The backbone's evaluations do not need the adapter (PART=backbone-eval can run beside its training).
if [ "$PART" = all ] || [ "$PART" = backbone-eval ]; then
  for set in $SETS; do
    $BIN eval --backbone $BB --config $CFG --method pretrain --task sr2 --data $D/benchmarks/$set/HR --json \
      > $M/eval/backbone-sr2-$set.json
    $BIN eval --backbone $BB --config $CFG --method pretrain --task lr2-noise30 --data $D/benchmarks/$set/HR --json \
      > $M/eval/backbone-lr2-noise30-$set.json
  done
  # The x2 head on BSD100 too (comparable with ipt-tiny's card); the noisy task stays on the smaller sets.
  for set in ${SR2_SETS:-BSD100}; do
    $BIN eval --backbone $BB --config $CFG --method pretrain --task sr2 --data $D/benchmarks/$set/HR --json \
      > $M/eval/backbone-sr2-$set.json
  done
fi
if [ "$PART" = all ] || [ "$PART" = adapter-eval ]; then
  for set in $SETS; do
    $BIN eval --adapter $M/lr2-noise30.safetensors --data $D/benchmarks/$set/HR --json > $M/eval/lr2-noise30-$set.json
  done
fi
# The canonical call on the shipped adapter, judged in every runtime of the matrix (seeded inputs, candle reference).
if [ "$PART" = all ] || [ "$PART" = validate ]; then
  tmp=$(mktemp -d)
  $BIN export --adapter $M/lr2-noise30.safetensors -o "$tmp/edt-tiny-lr2-noise30.onnx"
  $BIN validate "$tmp/edt-tiny-lr2-noise30.onnx" --runtime all --json > $M/eval/validate-lr2-noise30.json
  # And on patches of real inputs of the task: the first 8 BSDS400 training photos, degraded (seed 0).
  mkdir -p "$tmp/clean"
  for f in $(ls $D/train/bsds400 | sort | head -8); do cp "$D/train/bsds400/$f" "$tmp/clean/"; done
  $BIN degrade --task lr2-noise30 -o "$tmp/noisy" "$tmp/clean" > /dev/null
  $BIN validate "$tmp/edt-tiny-lr2-noise30.onnx" --images "$tmp/noisy" --runtime all --latency-runs 0 --json \
    > $M/eval/validate-lr2-noise30-images.json
  rm -rf "$tmp"
fi
