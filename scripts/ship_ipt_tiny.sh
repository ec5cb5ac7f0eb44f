#!/usr/bin/env bash
# Train the shipped AdaptIR adapters on models/ipt-tiny/backbone.safetensors and evaluate backbone and adapters
# on held-out benchmark images; JSON results go to models/ipt-tiny/eval/. Usage (from the repo root):
#   scripts/ship_ipt_tiny.sh [STEPS] [BIN]      (defaults: 300, target/release/adaptir)
# Heavy: about 1-2 s per step per adapter on one CPU thread. See models/ipt-tiny/MODEL_CARD.md for the numbers.
set -euo pipefail
STEPS=${1:-300}
BIN=${2:-target/release/adaptir}
D=../shared/data
M=models/ipt-tiny
BB=$M/backbone.safetensors
mkdir -p $M/eval

adapter() { # task, data args...
  local task=$1; shift
  $BIN train --method adaptir --task "$task" "$@" --backbone $BB --steps "$STEPS" --batch 16 --lr 5e-4 --seed 0 \
    --checkpoint-every 50 --eval-every 50 --out $M/$task.safetensors --resume
}

evaluate() { # name, args...
  local name=$1; shift
  $BIN eval "$@" --json > $M/eval/$name.json
}

case "${PART:-all}" in
  backbone|all)
    for t in sr2 sr3 sr4; do
      evaluate backbone-$t-Set5 --backbone $BB --method pretrain --task $t --data $D/benchmarks/Set5/HR
      evaluate backbone-$t-Set14 --backbone $BB --method pretrain --task $t --data $D/benchmarks/Set14/HR
    done
    for t in denoise30 denoise50; do
      evaluate backbone-$t-CBSD68 --backbone $BB --method pretrain --task $t --data $D/benchmarks/CBSD68 --limit 20
    done
    evaluate backbone-derain-Rain100L3 --backbone $BB --method pretrain --task derain --pairs $D/paired/Rain100L_sample3
    ;;&
  adapters|all)
    adapter derain --data $D/train/photos_hr
    adapter lr4-noise30 --data $D/train/photos_hr
    adapter lr4-jpeg30 --data $D/train/photos_hr
    adapter lowlight --data $D/train/photos_hr
    adapter realnoise --pairs $D/paired/PolyU_real_noise
    ;;&
  adapter-eval|all)
    for t in derain lr4-noise30 lr4-jpeg30 lowlight; do
      [ -f $M/$t.safetensors ] || continue
      case $t in
        derain) sets="Set14/HR" ;;
        lowlight) sets="Kodak24" ;;
        *) sets="Set5/HR Set14/HR" ;;
      esac
      for s in $sets; do
        n=$(echo $s | cut -d/ -f1)
        evaluate $t-$n --adapter $M/$t.safetensors --data $D/benchmarks/$s
        evaluate backbone-$t-$n --backbone $BB --method pretrain --task $t --data $D/benchmarks/$s
      done
    done
    if [ -f $M/derain.safetensors ]; then
      evaluate derain-Rain100L3 --adapter $M/derain.safetensors --pairs $D/paired/Rain100L_sample3
    fi
    if [ -f $M/realnoise.safetensors ]; then
      evaluate realnoise-CC15 --adapter $M/realnoise.safetensors --pairs $D/paired/CC15_real_noise
      evaluate backbone-realnoise-CC15 --backbone $BB --method pretrain --task realnoise --pairs $D/paired/CC15_real_noise
    fi
    ;;
esac
