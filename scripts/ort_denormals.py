"""Denormal f32 values in an exported file, run by ONNX Runtime (CPU): where they appear, and what they cost.

BENCHMARKS.md "INT8 and bf16": ORT's f32 latency differed between adapters whose graphs have the same shape. This
times each file with ONNX Runtime's `session.set_denormal_as_zero` off and on, and a copy of the file whose
Softmax outputs below f32's smallest normal are set to 0 in the graph (Less + Where after every Softmax; same outputs)
(interleaved, each timing in a process of its own, 2 threads, median of 30 runs, on the golden's inputs), and lists the tensors that hold denormals (every node output made a graph output,
graph optimisations off, one run).

    .venv/bin/python scripts/ort_denormals.py WORK_DIR NAME [NAME ...]
    .venv/bin/python scripts/ort_denormals.py --count FILE.onnx     (only the denormal count, one seeded 48x48 input)

WORK_DIR holds NAME.onnx and NAME.golden.safetensors (as scripts/int8_eval.sh writes them: /tmp/int8-eval).
Needs the `onnxruntime` and `onnx` packages of .venv (scripts/setup-ort.sh).
"""
import collections, json, struct, subprocess, sys, time

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort


def load_safetensors(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    header, data = json.loads(b[8 : 8 + n]), b[8 + n :]
    dtypes = {"F32": np.float32, "F64": np.float64}
    return {k: np.frombuffer(data[v["data_offsets"][0] : v["data_offsets"][1]], dtype=dtypes[v["dtype"]]).reshape(v["shape"])
            for k, v in header.items() if k != "__metadata__"}


def median_ms(path, golden, daz):
    """Time `path` in a process of its own: ONNX Runtime sets `session.set_denormal_as_zero` on the calling thread
    for a process's first session only (its pool threads get it per session), so sessions with and without it in
    one process would leave the calling thread unflushed."""
    out = subprocess.run([sys.executable, __file__, "--time", path, golden, daz], check=True, capture_output=True, text=True)
    return float(out.stdout)


def time_one(path, golden, daz):
    x = load_safetensors(golden)["input"].astype(np.float32)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.add_session_config_entry("session.set_denormal_as_zero", daz)
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feed = {s.get_inputs()[0].name: x}
    s.run(None, feed)
    t = []
    for _ in range(30):
        t0 = time.perf_counter()
        s.run(None, feed)
        t.append(time.perf_counter() - t0)
    return float(np.median(t)) * 1e3


def flushed_copy(path):
    """The file with `Where(p < f32 min normal, 0, p)` after every Softmax: the graph-level alternative to DAZ."""
    m = onnx.load(path)
    g = m.graph
    g.initializer.append(onnx.numpy_helper.from_array(np.array(np.finfo(np.float32).tiny, np.float32), "ort_denormals_min"))
    g.initializer.append(onnx.numpy_helper.from_array(np.array(0, np.float32), "ort_denormals_zero"))
    nodes = []
    for n in g.node:
        nodes.append(n)
        if n.op_type == "Softmax":
            out = n.output[0]
            n.output[0] = out + "/raw"
            nodes.append(onnx.helper.make_node("Less", [out + "/raw", "ort_denormals_min"], [out + "/small"]))
            nodes.append(onnx.helper.make_node("Where", [out + "/small", "ort_denormals_zero", out + "/raw"], [out]))
    del g.node[:]
    g.node.extend(nodes)
    flushed = path[: -len(".onnx")] + ".flushed.onnx"
    onnx.save(m, flushed)
    return flushed


def denormal_tensors(path, x):
    m = onnx.load(path)
    have = {v.name for v in m.graph.output}
    for n in m.graph.node:
        for o in n.output:
            if o and o not in have:
                m.graph.output.append(onnx.ValueInfoProto(name=o))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    outs = s.run(None, {s.get_inputs()[0].name: x})
    tiny = np.finfo(np.float32).tiny
    found = collections.Counter()
    for meta, v in zip(s.get_outputs(), outs):
        if isinstance(v, np.ndarray) and v.dtype == np.float32 and v.size:
            c = int(((np.abs(v) > 0) & (np.abs(v) < tiny)).sum())
            if c:
                found[meta.name] = c
    return found


def main():
    if sys.argv[1] == "--count":
        # Any exported file (e.g. the official export of scripts/official_bench.sh), on one seeded 48x48 image.
        x = np.random.default_rng(0).random((1, 3, 48, 48), dtype=np.float32)
        found = denormal_tensors(sys.argv[2], x)
        print(f"{sys.argv[2]}: {sum(found.values())} denormal values in {len(found)} tensors" +
              "".join(f"\n  {c} in {t}" for t, c in found.most_common(12)))
        return
    if sys.argv[1] == "--time":
        print(time_one(*sys.argv[2:5]))
        return
    work = sys.argv[1]
    for name in sys.argv[2:]:
        path, golden = f"{work}/{name}.onnx", f"{work}/{name}.golden.safetensors"
        x = load_safetensors(golden)["input"].astype(np.float32)
        flushed = flushed_copy(path)
        runs = [("file", path, "0"), ("DAZ", path, "1"), ("flushed in graph", flushed, "0")] * 2
        times = [(label, median_ms(p, golden, daz)) for label, p, daz in runs]
        print(f"{name} {tuple(x.shape)}: " + ", ".join(f"{label} {ms:.2f} ms" for label, ms in times))
        found = denormal_tensors(path, x)
        print(f"  {sum(found.values())} denormal values in {len(found)} tensors" +
              "".join(f"\n  {c} in {t}" for t, c in found.most_common(10)))


if __name__ == "__main__":
    main()
