#!/usr/bin/env bash
# The ONNX Runtime latency of each shipped adapter's export with and without `--denormal-as-zero`, through our own
# CLI (`adaptir ort-latency`, one process per figure, so the option also reaches the main thread: ONNX Runtime sets
# it for a process's first session only). BENCHMARKS.md "INT8 and bf16", the denormal paragraph.
#
#   bash scripts/denormal_latency.sh [WORK_DIR]    (default /tmp/denormal-latency; ADAPTERS, THREADS, ROUNDS, ITERS)
#
# Each adapter is exported with its golden (seeded inputs, batch 2); the rounds alternate off / on.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${ADAPTIR:-target/release/adaptir}
WORK=${1:-/tmp/denormal-latency}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
ITERS=${ITERS:-30}
ADAPTERS=${ADAPTERS:-"lr4-noise30 lr4-jpeg30 lowlight derain realnoise"}
[ -x "$BIN" ] || cargo build --release
mkdir -p "$WORK"
echo "== $(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2) $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), $THREADS threads, median of $ITERS"
median() {
    local a=$1; shift
    "$BIN" ort-latency --threads "$THREADS" --iters "$ITERS" --golden "$WORK/$a.golden.safetensors" "$@" "$WORK/$a.onnx" --json |
    python3 -c 'import json,sys; print("%.2f" % json.load(sys.stdin)["median_ms"])'
}
for a in $ADAPTERS; do
    [ -f "$WORK/$a.onnx" ] || "$BIN" export --adapter "models/ipt-tiny/$a.safetensors" -o "$WORK/$a.onnx" \
        --golden "$WORK/$a.golden.safetensors" > /dev/null
    line="$a:"
    for r in $(seq "$ROUNDS"); do
        off=$(median "$a"); on=$(median "$a" --denormal-as-zero)
        line="$line  off $off ms, on $on ms ($(python3 -c "print('%.3f' % ($on / $off))")x);"
    done
    echo "$line"
done
