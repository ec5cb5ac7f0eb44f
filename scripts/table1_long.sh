#!/usr/bin/env bash
# Issue 14's small-scale Table 1 (docs/training.md "Table 1 at matched budgets"), resumable across sessions: every
# PETL method at a matched budget of 21,000 trainable parameters, three seeds, lr4-noise30 and derain, on the
# stage-2 ipt-tiny backbone (shipped 2026-12-05 to 12-07, kept in runs/pretrain-ipt-tiny-2/, sha256 bba29189...).
# 48 trainings of 500 steps plus their evaluations: many hours on two CPU cores.
#
#   bash scripts/table1_long.sh start    # start or resume in the background (nice 19); progress in $WORK/progress.log
#   bash scripts/table1_long.sh status   # is it running, the last progress lines
#   bash scripts/table1_long.sh stop     # stop it (the finished runs and the running one's checkpoint stay)
#   bash scripts/table1_long.sh fg       # run in the foreground
#
# Each session commits $WORK (adapters, their eval JSONs, checkpoints, the partial TABLE1.md whose cells say how
# many seeds they hold); the next one continues: finished runs are read back, not retrained, and an interrupted
# training resumes from its checkpoint (bit-identical for one binary and one THREADS value, so keep THREADS).
# Environment: THREADS (rayon threads, default 1: leaves a core for other work).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=models/ipt-tiny/table1
BIN=target/release/examples/compare_methods
mkdir -p "$WORK"
ARGS=(--budget 21000 --seeds 0,1,2 --tasks lr4-noise30,derain --steps 500 --batch 16 --lr 1e-2
  --backbone runs/pretrain-ipt-tiny-2/backbone.safetensors --data ../shared/data/train/photos_hr
  --work "$WORK" --out "$WORK/TABLE1.md")
PID=/tmp/adaptir-table1.pid
case "${1:-status}" in
  start)
    if [ -f "$PID" ] && kill -0 "$(cat "$PID")" 2>/dev/null; then echo "already running (pid $(cat "$PID"))"; exit 0; fi
    cargo build --release --example compare_methods
    echo "== $(date -u +%FT%TZ) start: $BIN ${ARGS[*]} (THREADS ${THREADS:-1})" >> "$WORK/progress.log"
    RAYON_NUM_THREADS=${THREADS:-1} nohup nice -n 19 "$BIN" "${ARGS[@]}" >> "$WORK/progress.log" 2>&1 &
    echo $! > "$PID"
    echo "started (pid $!), log $WORK/progress.log" ;;
  fg)
    cargo build --release --example compare_methods
    echo "== $(date -u +%FT%TZ) start: $BIN ${ARGS[*]} (THREADS ${THREADS:-1})" >> "$WORK/progress.log"
    RAYON_NUM_THREADS=${THREADS:-1} "$BIN" "${ARGS[@]}" 2>&1 | tee -a "$WORK/progress.log" ;;
  stop)
    if [ -f "$PID" ] && kill -0 "$(cat "$PID")" 2>/dev/null; then
      kill "$(cat "$PID")"; echo "== $(date -u +%FT%TZ) stopped" >> "$WORK/progress.log"; echo stopped
    else
      echo "not running"
    fi ;;
  status)
    if [ -f "$PID" ] && kill -0 "$(cat "$PID")" 2>/dev/null; then echo "running (pid $(cat "$PID"))"; else echo "not running"; fi
    tail -n 5 "$WORK/progress.log" 2>/dev/null || true ;;
  *) echo "usage: $0 start|status|stop|fg" >&2; exit 2 ;;
esac
