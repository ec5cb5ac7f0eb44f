#!/usr/bin/env bash
# What the `softmax-floor` pass buys and costs in each CPU runtime (BENCHMARKS.md "Denormal attention"): every
# shipped adapter exported as usual (the pass on), a copy with the pass's nodes taken out again (each Softmax reads
# its logits directly: the export before the pass), and the latency of both in ONNX Runtime (also the copy with
# `--denormal-as-zero`), OpenVINO (f32) and tract. One process per figure (ONNX Runtime sets its flush mode for a
# process's first session), rounds interleaved.
#
#   bash scripts/softmax_floor_bench.sh [WORK_DIR]   (default /tmp/softmax-floor; ADAPTERS, THREADS, ROUNDS, ITERS)
#
# Needs .venv's onnx package (scripts/setup-ort.sh) for the copy, and OpenVINO (validate --runtime openvino).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${ADAPTIR:-target/release/adaptir}
WORK=${1:-/tmp/softmax-floor}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
ITERS=${ITERS:-30}
ADAPTERS=${ADAPTERS:-"lr4-noise30 lr4-jpeg30 lowlight derain realnoise"}
[ -x "$BIN" ] || cargo build --release
mkdir -p "$WORK"
echo "== $(bash scripts/machine.sh); $THREADS threads, median of $ITERS runs, batch 2 (the golden's inputs), ours $(git rev-parse --short HEAD)"
unfloor() {
    .venv/bin/python - "$1" "$2" <<'PY'
import sys, onnx
m = onnx.load(sys.argv[1]); g = m.graph
floored = {}
for n in g.node:
    if n.op_type == "Max" and n.name.endswith("/floor/Max"):
        floored[n.output[0]] = n.input[0]
keep = [n for n in g.node if "/floor/" not in n.name]
for n in keep:
    n.input[:] = [floored.get(i, i) for i in n.input]
del g.node[:]; g.node.extend(keep)
used = {i for n in g.node for i in n.input}
kept = [t for t in g.initializer if t.name in used]
del g.initializer[:]; g.initializer.extend(kept)
onnx.checker.check_model(m)
onnx.save(m, sys.argv[2])
print(f"{len(floored)} Softmax floors taken out", file=sys.stderr)
PY
}
ort() { "$BIN" ort-latency "$1" --golden "$2" --threads "$THREADS" --iters "$ITERS" "${@:3}" --json |
    python3 -c 'import json,sys; print("%.2f" % json.load(sys.stdin)["median_ms"])'; }
other() { "$BIN" validate "$1" --golden "$2" --runtime "$3" --threads "$THREADS" --latency-runs "$ITERS" --json |
    python3 -c 'import json,sys; print("%.2f" % json.load(sys.stdin)["runtimes"][0]["latency_ms"])'; }
echo "adapter | round | ORT floor / no floor / no floor + DAZ (ms) | OpenVINO floor / no floor | tract floor / no floor"
for a in $ADAPTERS; do
    F=$WORK/$a.onnx; N=$WORK/$a.nofloor.onnx; G=$WORK/$a.golden.safetensors
    "$BIN" export --adapter "models/ipt-tiny/$a.safetensors" -o "$F" --golden "$G" > /dev/null
    unfloor "$F" "$N"
    "$BIN" validate "$N" --golden "$G" > /dev/null  # the copy still computes the model
    for r in $(seq "$ROUNDS"); do
        echo "$a | $r | $(ort "$F" "$G") / $(ort "$N" "$G") / $(ort "$N" "$G" --denormal-as-zero) | $(other "$F" "$G" openvino) / $(other "$N" "$G" openvino) | $(other "$F" "$G" tract) / $(other "$N" "$G" tract)"
    done
done
