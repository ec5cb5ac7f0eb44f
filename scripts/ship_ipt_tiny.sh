#!/usr/bin/env bash
# Train the shipped AdaptIR adapters on models/ipt-tiny/backbone.safetensors and evaluate backbone and adapters
# on held-out images; JSON results go to models/ipt-tiny/eval/. These are the commands that produced the shipped
# files and the numbers in models/ipt-tiny/MODEL_CARD.md. Usage (from the repo root):
#   RAYON_NUM_THREADS=2 scripts/ship_ipt_tiny.sh [STEPS] [BIN]      (defaults: 120, target/release/adaptir;
#   the shipped files: STEPS=500)
# PART=adapters|eval|all (default all). With 2 threads: x1 adapters ~0.4 s/step, x4 ones ~0.7 s/step.
set -euo pipefail
STEPS=${1:-120}
BIN=${2:-target/release/adaptir}
D=../shared/data
M=models/ipt-tiny
BB=$M/backbone.safetensors
mkdir -p $M/eval
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-1}

adapter() { # task, data args...
  local task=$1; shift
  $BIN train --method adaptir --task "$task" "$@" --backbone $BB --steps "$STEPS" --batch 16 --lr 5e-4 --seed 0 \
    --checkpoint-every 20 --eval-every 40 --out $M/$task.safetensors --resume
}
ev() { # name, args...
  local name=$1; shift
  $BIN eval "$@" --json > $M/eval/$name.json
}
both() { # name, task, data args...: the adapter and the backbone alone on the same images
  local name=$1 task=$2; shift 2
  ev $task-$name --adapter $M/$task.safetensors "$@"
  ev backbone-$task-$name --backbone $BB --method pretrain --task $task "$@"
}

if [ "${PART:-all}" != eval ]; then
  adapter derain --data $D/train/photos_hr
  adapter lr4-noise30 --data $D/train/photos_hr
  adapter lr4-jpeg30 --data $D/train/photos_hr
  adapter lowlight --data $D/train/photos_hr
  adapter realnoise --pairs $D/paired/PolyU_real_noise
fi
if [ "${PART:-all}" != adapters ]; then
  for t in sr2 sr3 sr4; do ev backbone-$t-Set5 --backbone $BB --method pretrain --task $t --data $D/benchmarks/Set5/HR; done
  for t in sr2 sr4; do ev backbone-$t-Set14 --backbone $BB --method pretrain --task $t --data $D/benchmarks/Set14/HR; done
  for t in denoise30 denoise50; do
    ev backbone-$t-CBSD68 --backbone $BB --method pretrain --task $t --data $D/benchmarks/CBSD68 --limit 10
  done
  both Rain100L3 derain --pairs $D/paired/Rain100L_sample3
  both Set5 derain --data $D/benchmarks/Set5/HR
  for t in lr4-noise30 lr4-jpeg30; do
    both Set5 $t --data $D/benchmarks/Set5/HR
    both Set14 $t --data $D/benchmarks/Set14/HR
  done
  both Kodak24 lowlight --data $D/benchmarks/Kodak24 --limit 6
  both CC15 realnoise --pairs $D/paired/CC15_real_noise --limit 8
fi
