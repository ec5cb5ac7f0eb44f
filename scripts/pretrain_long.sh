#!/usr/bin/env bash
# The long pre-training of issue 14, resumable across sessions and machines: the next ipt-tiny backbone,
# continued from the shipped one (--init) on every training folder of ../shared/data/train/.
#
#   bash scripts/pretrain_long.sh start    # start or resume in the background (nice 19); progress in $RUN/progress.log
#   bash scripts/pretrain_long.sh status   # is it running, and the last progress lines
#   bash scripts/pretrain_long.sh stop     # stop it (SIGTERM; the last checkpoint stays, every --checkpoint-every steps)
#   bash scripts/pretrain_long.sh fg       # run in the foreground (e.g. on the GPU machine: DEVICE=cuda)
#
# The run is bit-identical however often it is stopped and resumed (docs/training.md "Resuming"), so each session
# commits $RUN/backbone.ckpt.safetensors and the log, and the next one continues. When all steps are done the
# backbone is $RUN/backbone.safetensors (and its curve); models/ipt-tiny/MODEL_CARD.md says what is shipped.
# The checkpoint (31 MB: weights + AdamW moments) is tracked, which puts the working tree over the GPU device tool's
# 64 MiB: before a device call, move it out of the tree (and the training data, ../shared, never travels there),
# so this run continues on the CPU; a GPU run would need the data carried, which does not fit either.
# Environment: ADAPTIR (the binary, default target/release/adaptir), THREADS (default 2), DEVICE (default cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=runs/pretrain-ipt-tiny-2
BIN=${ADAPTIR:-target/release/adaptir}
mkdir -p "$RUN"
# Three photos of photos_small are also Set14 images (baboon, barbara, monarch): never trained on.
ARGS=(pretrain --preset ipt-tiny
  --data ../shared/data/train/photos_hr --data ../shared/data/train/photos_small --data ../shared/data/train/bsds400
  --exclude npm_baboon --exclude sporco_barbara --exclude sporco_monarch
  --init models/ipt-tiny/backbone.safetensors
  --steps 16000 --batch 8 --lr 2e-4 --seed 0
  --out "$RUN/backbone.safetensors" --checkpoint-every 200 --eval-every 500
  --device "${DEVICE:-cpu}")
# --init is read only when no checkpoint exists; later runs resume, and the shipped backbone it names must not
# change under them (the fingerprint records its sha256). The run finished on 2026-12-05 and its backbone became
# models/ipt-tiny/backbone.safetensors, so --init now names another file than the one it started from (sha256
# 28a7cf5c..., in git history before that date): the finished checkpoint stays as the record of the run.
case "${1:-status}" in
  start)
    if [ -f "$RUN/pid" ] && kill -0 "$(cat "$RUN/pid")" 2>/dev/null; then
      echo "already running (pid $(cat "$RUN/pid"))"; exit 0
    fi
    [ -x "$BIN" ] || cargo build --release
    echo "== $(date -u +%FT%TZ) start: $BIN ${ARGS[*]} --resume" >> "$RUN/progress.log"
    RAYON_NUM_THREADS=${THREADS:-2} nohup nice -n 19 "$BIN" "${ARGS[@]}" --resume >> "$RUN/progress.log" 2>&1 &
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
