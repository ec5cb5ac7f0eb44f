#!/usr/bin/env bash
# The long pre-trainings, resumable across sessions and machines. PROFILE picks the run:
#   ipt-tiny-2 (default): issue 14's next ipt-tiny backbone, continued from the shipped one (--init) on every
#     training folder of ../shared/data/train/ (finished 2026-12-05, shipped until 2026-12-07; its backbone is kept
#     in runs/pretrain-ipt-tiny-2/ for Table 1 and stage 3, which were trained on it).
#   edt-tiny: issue 19's EDT x2 backbone from scratch on the same folders (models/edt-tiny/).
#   ipt-tiny-3: issue 14's stage 3, continued from the shipped ipt-tiny backbone (stage 2's result) with a fresh
#     schedule on the same folders, for the x4 head (BSD100 +0.41 dB over bicubic, +0.5 wanted) and what
#     lr4-jpeg30 can reach on it (docs/training.md "lr4-jpeg30 and the training photos"). Started and finished
#     2026-12-07 (runs/pretrain-ipt-tiny-3/: backbone, checkpoint, curve, evaluation), shipped the same day as
#     models/ipt-tiny/backbone.safetensors (MODEL_CARD.md).
#
#   bash scripts/pretrain_long.sh start    # start or resume in the background (nice $NICE, default 19); progress in $RUN/progress.log
#   bash scripts/pretrain_long.sh status   # is it running, and the last progress lines
#   bash scripts/pretrain_long.sh stop     # stop it (SIGTERM; the last checkpoint stays, every --checkpoint-every steps)
#   bash scripts/pretrain_long.sh fg       # run in the foreground (e.g. on the GPU machine: DEVICE=cuda)
#
# A run is bit-identical however often it is stopped and resumed (docs/training.md "Resuming"), so each session
# commits $RUN/backbone.ckpt.safetensors and the log, and the next one continues. When all steps are done the
# backbone is $RUN/backbone.safetensors (and its curve); the model card says what is shipped.
# The ipt-tiny checkpoint (31 MB: weights + AdamW moments) is tracked, which puts the working tree over the GPU
# device tool's 64 MiB: before a device call, move it out of the tree (and the training data, ../shared, never
# travels there), so these runs continue on the CPU; a GPU run would need the data carried, which does not fit.
# Environment: PROFILE, ADAPTIR (the binary, default target/release/adaptir), THREADS (default 2), DEVICE (default
# cpu), NICE (default 19).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${ADAPTIR:-target/release/adaptir}
# Three photos of photos_small are also Set14 images (baboon, barbara, monarch): never trained on.
DATA=(--data ../shared/data/train/photos_hr --data ../shared/data/train/photos_small --data ../shared/data/train/bsds400
  --exclude npm_baboon --exclude sporco_barbara --exclude sporco_monarch)
case "${PROFILE:-ipt-tiny-2}" in
  ipt-tiny-2)
    RUN=runs/pretrain-ipt-tiny-2
    ARGS=(pretrain --preset ipt-tiny "${DATA[@]}"
      --init models/ipt-tiny/backbone.safetensors
      --steps 16000 --batch 8 --lr 2e-4 --seed 0
      --out "$RUN/backbone.safetensors" --checkpoint-every 200 --eval-every 500
      --device "${DEVICE:-cpu}")
    # --init is read only when no checkpoint exists; later runs resume, and the shipped backbone it names must not
    # change under them (the fingerprint records its sha256). The run finished on 2026-12-05 and its backbone became
    # models/ipt-tiny/backbone.safetensors, so --init now names another file than the one it started from (sha256
    # 28a7cf5c..., in git history before that date): the finished checkpoint stays as the record of the run.
    ;;
  edt-tiny)
    # About 10 s a step of batch 8 on two cores (docs/training.md "edt-tiny"): a short schedule with a higher
    # learning rate than the official 2e-4, which is tuned for 500k steps.
    RUN=runs/edt-tiny
    ARGS=(pretrain --preset edt-tiny "${DATA[@]}"
      --steps 500 --batch 8 --lr 5e-4 --seed 0 --flush-denormals
      --out "$RUN/backbone.safetensors" --checkpoint-every 25 --eval-every 100
      --device "${DEVICE:-cpu}")
    ;;
  ipt-tiny-3)
    # Stage 2 ended at lr 1.25e-5 with the held-out PSNR still rising (+0.76 dB over its last 7,000 steps): a new
    # schedule from half stage 2's starting rate. --init is read once, when no checkpoint exists; the fingerprint
    # records its sha256 (bba29189..., the backbone shipped from 2026-12-05 to 12-07). Since this run's result became
    # models/ipt-tiny/backbone.safetensors, that stage-2 file is kept at runs/pretrain-ipt-tiny-2/, which --init names.
    RUN=runs/pretrain-ipt-tiny-3
    ARGS=(pretrain --preset ipt-tiny "${DATA[@]}"
      --init runs/pretrain-ipt-tiny-2/backbone.safetensors
      --steps 12000 --batch 8 --lr 1e-4 --seed 0
      --out "$RUN/backbone.safetensors" --checkpoint-every 200 --eval-every 500
      --device "${DEVICE:-cpu}")
    ;;
  *) echo "PROFILE must be ipt-tiny-2, edt-tiny or ipt-tiny-3, not \`$PROFILE\`" >&2; exit 2 ;;
esac
mkdir -p "$RUN"
case "${1:-status}" in
  start)
    if [ -f "$RUN/pid" ] && kill -0 "$(cat "$RUN/pid")" 2>/dev/null; then
      echo "already running (pid $(cat "$RUN/pid"))"; exit 0
    fi
    [ -x "$BIN" ] || cargo build --release
    echo "== $(date -u +%FT%TZ) start: $BIN ${ARGS[*]} --resume" >> "$RUN/progress.log"
    RAYON_NUM_THREADS=${THREADS:-2} nohup nice -n "${NICE:-19}" "$BIN" "${ARGS[@]}" --resume >> "$RUN/progress.log" 2>&1 &
    echo $! > "$RUN/pid"
    echo "started (pid $!), log $RUN/progress.log" ;;
  fg)
    echo "== $(date -u +%FT%TZ) start: $BIN ${ARGS[*]} --resume" >> "$RUN/progress.log"
    RAYON_NUM_THREADS=${THREADS:-2} "$BIN" "${ARGS[@]}" --resume 2>&1 | tee -a "$RUN/progress.log" ;;
  stop)
    if [ -f "$RUN/pid" ] && kill -0 "$(cat "$RUN/pid")" 2>/dev/null; then
      kill "$(cat "$RUN/pid")"; echo "== $(date -u +%FT%TZ) stopped" >> "$RUN/progress.log"; echo stopped
    else
      echo "not running"
    fi ;;
  status)
    if [ -f "$RUN/pid" ] && kill -0 "$(cat "$RUN/pid")" 2>/dev/null; then echo "running (pid $(cat "$RUN/pid"))"; else echo "not running"; fi
    tail -n 5 "$RUN/progress.log" 2>/dev/null || true ;;
  *) echo "usage: $0 start|status|stop|fg" >&2; exit 2 ;;
esac
