#!/usr/bin/env python3
"""Would ONNX Runtime's int8 products saturate on a CPU without VNNI?

    .venv/bin/python scripts/int8_saturation.py FILE.int8.onnx GOLDEN.safetensors

On x86 CPUs with AVX2 or AVX-512 but without VNNI, ONNX Runtime's U8S8 kernels (MLAS) multiply uint8 activations by
int8 weights with `vpmaddubsw`, which adds each pair of neighbouring products along the reduction axis in a
saturating int16 (then `vpmaddwd` widens to int32). A pair sum outside [-32768, 32767] is clipped there; with VNNI
(`vpdpbusd`) every product is summed in int32 and nothing clips. This script runs the int8 file in ONNX Runtime on
the golden's inputs, reads the uint8 input of every quantized MatMul and Conv, and counts the pair sums
a[k] w[k] + a[k+1] w[k+1] (raw uint8 times raw int8, as the kernel sees them) that leave the int16 range. A Conv's
reduction axis is ONNX Runtime's NHWC im2col order (kernel row, kernel column, input channel), so its pairs are
neighbouring input channels.

The export's weights are 7-bit (`WEIGHT_MAX` in src/compile/quantize.rs) so that no pair can leave int16; this
script shows what 8-bit weights did (an older binary's file, or a file from another quantizer), and that ours
stay inside. `scripts/int8_agreement.py` checks the same with the runtimes themselves on an emulated CPU without
VNNI.
"""
import sys

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort

from ort_denormals import load_safetensors


def pair_sums_out_of_range(a, w, zero_point):
    """a: [M, K] uint8, w: [K, N] int8. The count of pair sums outside int16, their total, the largest |sum|, and
    the signal-to-error ratio (dB) of the product that the clipping leaves: the true product (a - zp) w against
    the sum of what the clipping removed, per output."""
    a = a.astype(np.int64)
    w = w.astype(np.int64)
    if a.shape[1] % 2:
        a = np.pad(a, ((0, 0), (0, 1)), constant_values=zero_point)
        w = np.pad(w, ((0, 1), (0, 0)))
    bad, total, worst = 0, 0, 0
    err = np.zeros((a.shape[0], w.shape[1]), dtype=np.int64)
    for j in range(0, a.shape[1], 2):
        s = a[:, j : j + 1] * w[j : j + 1, :] + a[:, j + 1 : j + 2] * w[j + 1 : j + 2, :]
        clipped = np.clip(s, -32768, 32767)
        bad += int(np.count_nonzero(clipped != s))
        err += clipped - s
        total += s.size
        worst = max(worst, int(np.abs(s).max()))
    signal = (a - zero_point) @ w
    noise = np.mean(err.astype(np.float64) ** 2)
    snr = 10 * np.log10(np.mean(signal.astype(np.float64) ** 2) / noise) if noise > 0 else float("inf")
    return bad, total, worst, snr


def im2col_nhwc(x, kh, kw, pads, strides, zero_point):
    """x: [N, C, H, W] uint8 -> [N*OH*OW, kh*kw*C] in (kernel row, kernel column, channel) order; padding with the
    activation's zero point (the value of 0.0)."""
    n, c, h, w = x.shape
    t, l, b, r = pads[0], pads[1], pads[2], pads[3]
    xp = np.full((n, c, h + t + b, w + l + r), zero_point, dtype=x.dtype)
    xp[:, :, t : t + h, l : l + w] = x
    oh = (h + t + b - kh) // strides[0] + 1
    ow = (w + l + r - kw) // strides[1] + 1
    cols = []
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i : i + strides[0] * oh : strides[0], j : j + strides[1] * ow : strides[1]]
            cols.append(patch.transpose(0, 2, 3, 1).reshape(n * oh * ow, c))
    return np.concatenate(cols, axis=1)


def main():
    path, golden = sys.argv[1], sys.argv[2]
    m = onnx.load(path)
    g = m.graph
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    sites = []
    for n in g.node:
        if n.op_type not in ("MatMul", "Conv") or len(n.input) < 2:
            continue
        a_dq, w_dq = producer.get(n.input[0]), producer.get(n.input[1])
        if not (a_dq and w_dq and a_dq.op_type == w_dq.op_type == "DequantizeLinear"):
            continue
        w = inits.get(w_dq.input[0])
        if w is None or w.dtype != np.int8:
            continue
        zp = inits[a_dq.input[2]] if len(a_dq.input) > 2 else np.uint8(0)
        sites.append((n, a_dq.input[0], w, int(zp)))
    names = sorted({s[1] for s in sites})
    existing = {o.name for o in g.output}
    for name in names:
        if name not in existing:
            g.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.UINT8, None))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    x = load_safetensors(golden)["input"].astype(np.float32)
    outs = dict(zip([o.name for o in s.get_outputs()], s.run(None, {s.get_inputs()[0].name: x})))
    grand_bad, grand_total, affected, worst_snr = 0, 0, 0, float('inf')
    for n, aname, w, zp in sites:
        a = outs[aname]
        if n.op_type == "MatMul":
            a2, w2 = a.reshape(-1, a.shape[-1]), w
        else:
            attrs = {at.name: onnx.helper.get_attribute_value(at) for at in n.attribute}
            o, c, kh, kw = w.shape
            pads = attrs.get("pads", [0, 0, 0, 0])
            strides = attrs.get("strides", [1, 1])
            a2 = im2col_nhwc(a, kh, kw, pads, strides, zp)
            w2 = w.transpose(2, 3, 1, 0).reshape(kh * kw * c, o)
        bad, total, worst, snr = pair_sums_out_of_range(a2, w2, zp)
        grand_bad += bad
        grand_total += total
        affected += bad > 0
        if bad:
            print(f"{n.op_type:6s} {n.name}: {bad} of {total} pair sums outside int16 ({100 * bad / total:.4f} %), largest |sum| {worst}, product SNR {snr:.1f} dB")
            worst_snr = min(worst_snr, snr)
    print(f"{path}: {len(sites)} quantized products, {affected} with pair sums outside int16; "
          f"{grand_bad} of {grand_total} pair sums ({100 * grand_bad / max(grand_total, 1):.5f} %); "
          f"lowest product SNR under clipping {worst_snr:.1f} dB")


if __name__ == "__main__":
    main()
