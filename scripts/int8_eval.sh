#!/usr/bin/env bash
# Issue 17 item 3: each shipped adapter as a static INT8 file (`export --int8 --calibrate DIR`) and the f32 file run
# with OpenVINO's bf16 inference (`--precision bf16`): what each costs in PSNR / SSIM against the f32 model on
# held-out images, whether each runtime of the matrix runs the int8 file, and the latency of each against the f32
# file's, in ONNX Runtime (int8) and in OpenVINO (int8, bf16) (BENCHMARKS.md "INT8 and bf16").
#
#   bash scripts/int8_eval.sh [WORK_DIR]        (default /tmp/int8-eval; ADAPTERS, THREADS, ROUNDS in the env)
#   ADAPTERS="edt-tiny/lr2-noise30" bash scripts/int8_eval.sh      (the shipped EDT adapter: BACKBONE/TASK)
#
# Calibration never sees an evaluation image: the inputs of each task synthesised (`adaptir degrade`, seed 0) on the
# first 8 photos by name of ../shared/data/train/bsds400 (training photos, disjoint from Set14 / BSD100 / CBSD68);
# realnoise calibrates on the first 8 noisy photos of PolyU (real noise; evaluated on CC15). Evaluation: Set14 for
# the synthetic tasks (the issue's target), the real pairs for realnoise (CC15) and derain (Rain100L, 3 pairs).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${ADAPTIR:-target/release/adaptir}
WORK=${1:-/tmp/int8-eval}
DATA=../shared/data
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
ADAPTERS=${ADAPTERS:-"lr4-noise30 lr4-jpeg30 lowlight derain realnoise"}
[ -x "$BIN" ] || cargo build --release
mkdir -p "$WORK/clean"
for f in $(ls "$DATA/train/bsds400" | sort | head -8); do cp "$DATA/train/bsds400/$f" "$WORK/clean/"; done
echo "== $(bash scripts/machine.sh)"

for entry in $ADAPTERS; do
    # An entry is an ipt-tiny adapter's task, or BACKBONE/TASK for another shipped backbone (edt-tiny/lr2-noise30).
    case $entry in
        */*) A=models/$entry.safetensors; a=${entry//\//-}; task=${entry##*/} ;;
        *) A=models/ipt-tiny/$entry.safetensors; a=$entry; task=$entry ;;
    esac
    case $task in
        derain) degrade=rain-light; eval_data=(--pairs "$DATA/paired/Rain100L_sample3") ;;
        realnoise) degrade= ; eval_data=(--pairs "$DATA/paired/CC15_real_noise") ;;
        *) degrade=$task; eval_data=(--data "$DATA/benchmarks/Set14/HR") ;;
    esac
    CAL=$WORK/calib-$a
    rm -rf "$CAL"; mkdir -p "$CAL"
    if [ -n "$degrade" ]; then
        "$BIN" degrade --task "$degrade" -o "$CAL" "$WORK/clean" > /dev/null
    else
        noisy=$DATA/paired/PolyU_real_noise/noisy
        for f in $(ls "$noisy" | sort | head -8); do cp "$noisy/$f" "$CAL/"; done
    fi
    "$BIN" export --adapter "$A" -o "$WORK/$a.onnx" --golden "$WORK/$a.golden.safetensors" > /dev/null
    "$BIN" export --adapter "$A" -o "$WORK/$a.int8.onnx" --int8 --calibrate "$CAL" | grep -E '^(wrote|int8)'
    echo "-- $a: f32 (candle) vs int8 (ONNX Runtime) on ${eval_data[*]}"
    "$BIN" eval --adapter "$A" "${eval_data[@]}" | tail -n 1
    "$BIN" eval --adapter "$A" "${eval_data[@]}" --onnx "$WORK/$a.int8.onnx" | tail -n 1
    "$BIN" eval --adapter "$A" "${eval_data[@]}" --onnx "$WORK/$a.onnx" | tail -n 1
    echo "-- $a: the f32 file in OpenVINO, bf16 inference"
    "$BIN" eval --adapter "$A" "${eval_data[@]}" --onnx "$WORK/$a.onnx" --engine openvino --precision bf16 | tail -n 1
    echo "-- $a: every runtime of the matrix on patches of its calibration images"
    "$BIN" validate "$WORK/$a.int8.onnx" --adapter "$A" --images "$CAL" --runtime all --latency-runs 0 | grep -oE "^\[[a-z]+\]|psnr [0-9.]+ dB|^(PASS|FAIL).*" | paste -sd" " || true
    echo "-- $a: ONNX Runtime latency, batch 2, $THREADS threads, $ROUNDS rounds of f32 then int8 (median of 50 runs each)"
    for r in $(seq "$ROUNDS"); do
        f=$("$BIN" ort-latency "$WORK/$a.onnx" --golden "$WORK/$a.golden.safetensors" --threads "$THREADS" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["median_ms"])')
        q=$("$BIN" ort-latency "$WORK/$a.int8.onnx" --golden "$WORK/$a.golden.safetensors" --threads "$THREADS" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["median_ms"])')
        python3 -c "print(f'round $r: f32 {$f:.2f} ms, int8 {$q:.2f} ms, ratio {$q/$f:.3f}')"
    done
    echo "-- $a: OpenVINO latency, batch 2, $THREADS threads, $ROUNDS rounds of f32, bf16 inference, int8 (median of 50 runs each)"
    # Timed on the golden's seeded inputs: the int8 file's FAIL there (noise lies outside its calibrated ranges;
    # it is judged on real images above) does not change its latency.
    ov_ms() {
        { "$BIN" validate "$@" --golden "$WORK/$a.golden.safetensors" --runtime openvino --threads "$THREADS" \
            --latency-runs 50 --json || true; } | python3 -c 'import json,sys; print(json.load(sys.stdin)["runtimes"][0]["latency_ms"])'
    }
    for r in $(seq "$ROUNDS"); do
        f=$(ov_ms "$WORK/$a.onnx"); b=$(ov_ms "$WORK/$a.onnx" --precision bf16); q=$(ov_ms "$WORK/$a.int8.onnx")
        python3 -c "print(f'round $r: f32 {$f:.2f} ms, bf16 {$b:.2f} ms, int8 {$q:.2f} ms, ratios bf16 {$b/$f:.3f} int8 {$q/$f:.3f}')"
    done
done
echo "== done $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
