#!/usr/bin/env python3
"""Issue 17: the official AdaptIR code's side of the side-by-side measurement (driven by scripts/official_bench.sh).

The official model is imported by path from a checkout of github.com/csguoh/AdaptIR (OFFICIAL_DIR/net/ipt.py,
unmodified; nothing of it is copied here): IPT at its hard-coded ipt-base sizes (n_feats 64, 12 heads, 12 + 12
layers) with the official AdaptIR beside every FFN, loaded strictly from the weight file that
`cargo run --release --example bench_official -- --write-weights` writes (the same weights our tool runs).

    python official_bench.py train  OFFICIAL_DIR WEIGHTS [--batch 16] [--steps 3] [--threads 2] [--json OUT]
        one adapter-only training step as the official train.py makes it (parameters whose name lacks
        "adaptir" frozen, L1 loss, AdamW lr 1e-4 over the trainable ones, default weight decay 0.01), train mode,
        task denoise30, 48x48 inputs in [0, 1]: per-part times (forward + loss, backward, optimizer), median over
        the timed steps after one warm-up, peak RSS (VmHWM) after the steps; then one forward without the
        adapters (train mode) for the adapters' share of the forward.
    python official_bench.py export OFFICIAL_DIR WEIGHTS OUT.onnx [--no-adapter] [--batch N]
        torch.onnx.export(..., dynamo=True) of the eval-mode model (BatchNorm running statistics), task denoise30,
        input (N, 3, 48, 48) in [0, 1]; dynamic batch unless --batch N; --no-adapter: every layer's AdaptIR
        replaced by a zero (the official backbone alone).
    python official_bench.py count MODEL.onnx [...] [--threads 2] [--json OUT]
        (needs onnxruntime, not torch) node counts by op type of the file and of ONNX Runtime's optimized model
        (ORT_ENABLE_ALL, CPU EP, as a session of the benchmark loads it).

The official forward(x) in eval mode tiles through forward_chop and moves tensors to CUDA, so both subcommands
call what training calls on one 48x48 patch, forward_train(x * 255) / 255, through a small wrapper.
"""
import argparse
import json
import os
import sys
import time
import types

TASK = "denoise_30"  # official TASK_MAP: head 4 (x1), as our `--task denoise30`


def vm_hwm_gib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / (1024 * 1024)
    return None


def official_model(official_dir, weights):
    import torch
    from torch import nn

    # net/ipt.py imports torchvision.ops and matplotlib.pyplot at module level and uses neither in the model:
    # stand-ins, so that neither has to be installed.
    for name in ["torchvision", "torchvision.ops", "matplotlib", "matplotlib.pyplot"]:
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["torchvision"].ops = sys.modules["torchvision.ops"]
    sys.modules["matplotlib"].pyplot = sys.modules["matplotlib.pyplot"]
    sys.path.insert(0, os.path.abspath(official_dir))
    from net import ipt  # noqa: E402  (the official file, by path)

    for name in ["torchvision", "torchvision.ops", "matplotlib", "matplotlib.pyplot"]:
        if getattr(sys.modules.get(name), "__spec__", 0) is None:
            del sys.modules[name]  # a stand-in: torch's exporter probes for torchvision
    from safetensors.torch import load_file

    model = ipt.IPT(types.SimpleNamespace(de_type=TASK))
    missing, unexpected = model.load_state_dict(load_file(weights), strict=True)
    assert not missing and not unexpected

    class Patch(nn.Module):
        """What official training runs on a patch: forward_train(x * 255) / 255 with the task's head."""

        def __init__(self, m):
            super().__init__()
            self.m = m
            self.m.task_idx = self.m.TASK_MAP[TASK]

        def forward(self, x):
            return self.m.forward_train(x * 255.0) / 255.0

    return Patch(model), ipt


def without_adapters(model):
    from torch import nn

    class Zero(nn.Module):
        def forward(self, x):
            return 0.0

    saved = []
    for stack in [model.m.body.encoder.layers, model.m.body.decoder.layers]:
        for layer in stack:
            saved.append((layer, layer.adaptir))
            layer.adaptir = Zero()
    return saved


def restore_adapters(saved):
    for layer, a in saved:
        layer.adaptir = a


def cmd_train(a):
    import torch

    if a.flush_denormal:
        # torch's own switch (FTZ / DAZ on x86), before its thread pool exists (threads inherit the mode).
        assert torch.set_flush_denormal(True), "this CPU cannot flush denormals"
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model, _ = official_model(a.official, a.weights)
    model.train()
    trainable = []
    for name, p in model.named_parameters():
        p.requires_grad = "adaptir" in name
        if p.requires_grad:
            trainable.append(p)
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    loss_fn = torch.nn.L1Loss()
    n = sum(p.numel() for p in trainable)
    built = vm_hwm_gib()
    print(
        f"official IPT + AdaptIR (torch {torch.__version__}, {torch.get_num_threads()} threads), task {TASK}, "
        f"batch {a.batch}, 48x48; {n} trainable parameters; peak RSS after building: {built:.2f} GiB",
        flush=True,
    )
    rows = []
    for step in range(a.steps + 1):
        x = torch.rand(a.batch, 3, 48, 48)
        y = torch.rand(a.batch, 3, 48, 48)
        t0 = time.perf_counter()
        loss = loss_fn(model(x), y)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        r = {"forward": t1 - t0, "backward": t2 - t1, "optimizer": t3 - t2, "step": t3 - t0}
        tag = "warm-up step (untimed)" if step == 0 else f"step {step}"
        print(f"{tag}: {r['step']:.2f} s (forward {r['forward']:.2f}, backward {r['backward']:.2f}, "
              f"optimizer {r['optimizer']:.3f}; loss {loss.item():.4f})", flush=True)
        if step > 0:
            rows.append(r)
    peak = vm_hwm_gib()
    med = {k: sorted(r[k] for r in rows)[len(rows) // 2] for k in rows[0]}
    # The forward without the adapters (train mode; nothing requires a gradient, so nothing is kept for backward),
    # timed after the peak was read.
    saved = without_adapters(model)
    x = torch.rand(a.batch, 3, 48, 48)
    fwd_bb = []
    for _ in range(2):
        t = time.perf_counter()
        model(x)
        fwd_bb.append(time.perf_counter() - t)
    restore_adapters(saved)
    out = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": a.batch,
        "steps": a.steps,
        "median_s": med,
        "forward_backbone_only_s": min(fwd_bb),
        "peak_rss_gib": peak,
        "trainable": n,
    }
    print(f"median step {med['step']:.2f} s (forward {med['forward']:.2f}, backward {med['backward']:.2f}, "
          f"optimizer {med['optimizer']:.3f}); forward without adapters {min(fwd_bb):.2f} s; "
          f"peak RSS (VmHWM) {peak:.2f} GiB")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"wrote {a.json}")


def cmd_export(a):
    import torch

    torch.set_num_threads(2)
    model, _ = official_model(a.official, a.weights)
    model.eval()
    if a.no_adapter:
        without_adapters(model)
    # Example batch 2 for a dynamic batch: torch.export specialises a dimension whose example size is 1.
    x = torch.rand(a.batch or 2, 3, 48, 48)
    kw = {}
    if not a.batch:
        kw["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=1024)},)
    t = time.perf_counter()
    with torch.no_grad():
        torch.onnx.export(model, (x,), a.out, dynamo=True, external_data=False,
                                 input_names=["input"], output_names=["output"], **kw)
    print(f"wrote {a.out} ({os.path.getsize(a.out) / 2**20:.1f} MiB) in {time.perf_counter() - t:.1f} s, "
          f"torch {torch.__version__}, {'batch ' + str(a.batch) if a.batch else 'dynamic batch'}"
          f"{', without AdaptIR' if a.no_adapter else ''}")


def cmd_count(a):
    import collections

    import onnx
    import onnxruntime as ort

    out = {}
    for path in a.models:
        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opt_path = path + ".ort-optimized.onnx"
        so.optimized_model_filepath = opt_path
        so.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                    os.path.basename(opt_path) + ".data")
        so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        res = {}
        for tag, p in [("file", path), ("ort_optimized", opt_path)]:
            m = onnx.load(p, load_external_data=False)
            c = collections.Counter()
            c.update(f"{n.domain + '.' if n.domain else ''}{n.op_type}" for n in m.graph.node)
            # Nodes inside local functions (ONNX functions are inlined by ORT; counted for the file only).
            fn = collections.Counter()
            for f in m.functions:
                fn.update(n.op_type for n in f.node)
            res[tag] = {"total": sum(c.values()), "by_op": dict(c.most_common()),
                        "in_functions": dict(fn.most_common())}
        out[path] = res
        for tag in ["file", "ort_optimized"]:
            r = res[tag]
            top = ", ".join(f"{k} {v}" for k, v in list(r["by_op"].items())[:14])
            print(f"{path} [{tag}]: {r['total']} nodes: {top}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"wrote {a.json}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("official")
    t.add_argument("weights")
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--steps", type=int, default=3)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--flush-denormal", action="store_true", help="torch.set_flush_denormal(True) before building")
    t.add_argument("--json")
    e = sub.add_parser("export")
    e.add_argument("official")
    e.add_argument("weights")
    e.add_argument("out")
    e.add_argument("--no-adapter", action="store_true")
    e.add_argument("--batch", type=int, default=0)
    c = sub.add_parser("count")
    c.add_argument("models", nargs="+")
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--json")
    a = p.parse_args()
    {"train": cmd_train, "export": cmd_export, "count": cmd_count}[a.cmd](a)


if __name__ == "__main__":
    main()
