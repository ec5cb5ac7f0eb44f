#!/usr/bin/env python3
"""Write the `adaptir import` test fixtures (fixtures/import/) with torch's own `torch.save`.

Run once, with torch in a scratch venv outside the repository (the tests do not need torch):

    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch safetensors numpy
    /tmp/torchvenv/bin/python scripts/make_import_fixtures.py

Writes, from fixtures/parity/ipt_small_adaptir/weights.safetensors (the official IPT + AdaptIR state dict, made by
the official code: see that folder's README):

- ipt_small_derain.ckpt: shaped like the official AdaptIR training run's Lightning checkpoint: a dict with
  `state_dict` (every weight under `net.`), `epoch`, `global_step`, `pytorch-lightning_version`,
  `optimizer_states` (Adam state of the AdaptIR parameters), `lr_schedulers`, `callbacks`, `loops` and
  `hyper_parameters` = {"args": argparse.Namespace(...)}; one Namespace field is a pathlib.PosixPath, a global
  the importer does not know, outside the weights (it must be skipped with a note).
- ipt_f4_dp.pt: a backbone-only IPT state dict (no AdaptIR keys) of a smaller size (n_feats 4, 1+1 layers) as
  DataParallel saves it: every key under `module.`; shapes follow the official formulas, the MeanShift tensors are
  the official ones, everything else is drawn as PyTorch's default initialisers would (torch.manual_seed(1600);
  LayerNorm 1 + N(0, 0.05), bias N(0, 0.05)). ipt_f4.json is its config.
- evil_global.pt: a `state_dict` whose one weight unpickles by calling os.system("touch adaptir_import_pwned"):
  the importer must refuse it without running anything.
- no_state_dict.ckpt: a Lightning-shaped dict without `state_dict`.
"""
import argparse
import collections
import json
import os
import pathlib

import torch
from safetensors.torch import load_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "import"
OUT.mkdir(parents=True, exist_ok=True)

official = load_file(str(ROOT / "fixtures" / "parity" / "ipt_small_adaptir" / "weights.safetensors"))
keys = sorted(official)

# 1. The Lightning checkpoint of an AdaptIR run.
state_dict = collections.OrderedDict((f"net.{k}", official[k]) for k in keys)
adapter_keys = [k for k in keys if ".adaptir." in k and official[k].is_floating_point()
                and not k.endswith(("running_mean", "running_var"))]
g = torch.Generator().manual_seed(1601)
opt_state = {
    i: {
        "step": torch.tensor(1200.0),
        "exp_avg": torch.randn(official[k].shape, generator=g) * 1e-4,
        "exp_avg_sq": torch.rand(official[k].shape, generator=g) * 1e-8,
    }
    for i, k in enumerate(adapter_keys)
}
param_groups = [{
    "lr": 2e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False, "maximize": False,
    "foreach": None, "capturable": False, "differentiable": False, "fused": None, "initial_lr": 2e-4,
    "params": list(range(len(adapter_keys))),
}]
args = argparse.Namespace(
    de_type="derain", epochs=300, batch_size=8, lr=2e-4, patch_size=48, num_workers=8, num_gpus=1,
    ckpt_dir=pathlib.PosixPath("ckpt/derain"), wblogger=None, pretrained="ckpt/IPT_pretrain.pt",
)
ckpt = {
    "epoch": 299,
    "global_step": 1200,
    "pytorch-lightning_version": "2.5.0",
    "state_dict": state_dict,
    "loops": {"fit_loop": {"state_dict": {}, "epoch_loop.state_dict": {"_batches_that_stepped": 1200},
                           "epoch_progress": {"total": {"ready": 300, "completed": 299}}}},
    "callbacks": {"ModelCheckpoint{'monitor': None, 'mode': 'min', 'every_n_train_steps': 0}": {
        "monitor": None, "best_model_score": None, "best_model_path": "ckpt/derain/epoch=299.ckpt",
        "current_score": None, "dirpath": "ckpt/derain", "last_model_path": "", "kth_value": torch.tensor(float("inf")),
    }},
    "optimizer_states": [{"state": opt_state, "param_groups": param_groups}],
    "lr_schedulers": [{"warmup_epochs": 15, "max_epochs": 300, "warmup_start_lr": 0.0, "eta_min": 0.0,
                       "base_lrs": [2e-4], "last_epoch": 300, "verbose": False, "_step_count": 301,
                       "_get_lr_called_within_step": False, "_last_lr": [0.0]}],
    "hparams_name": "kwargs",
    "hyper_parameters": {"args": args},
}
torch.save(ckpt, OUT / "ipt_small_derain.ckpt")

# 2. A DataParallel backbone state dict, n_feats 4: the ipt_small shapes with every n_feats-derived size rescaled.
F_OLD, F = 22, 4
scale = {F_OLD: F, 9 * F_OLD: 9 * F, 36 * F_OLD: 36 * F, 27 * F_OLD: 27 * F, 2304 * F_OLD: 2304 * F, 4 * F_OLD: 4 * F}
torch.manual_seed(1600)
dp = collections.OrderedDict()
for k in keys:
    if ".adaptir." in k:
        continue
    t = official[k]
    if k.startswith(("sub_mean", "add_mean")):
        dp[f"module.{k}"] = t.clone()
        continue
    if k.endswith("position_ids"):
        dp[f"module.{k}"] = t.clone()
        continue
    shape = [scale.get(d, d) for d in t.shape]
    if ".norm" in k:
        v = (1.0 if k.endswith("weight") else 0.0) + 0.05 * torch.randn(shape)
    elif k.endswith(("pe.weight", "query_embed.weight")):
        v = torch.randn(shape)  # nn.Embedding's default init
    elif k.endswith("in_proj_weight"):
        bound = (6.0 / (shape[0] + shape[1])) ** 0.5  # nn.MultiheadAttention: xavier_uniform
        v = torch.empty(shape).uniform_(-bound, bound)
    else:
        # nn.Linear / nn.Conv2d defaults: weight and bias uniform in +-1/sqrt(fan_in) of the weight.
        w = official[k[: -len("bias")] + "weight"] if k.endswith("bias") else t
        fan_in = 1
        for dim in w.shape[1:]:
            fan_in *= scale.get(dim, dim)
        bound = 1.0 / fan_in ** 0.5
        v = torch.empty(shape).uniform_(-bound, bound)
    dp[f"module.{k}"] = v
torch.save(dp, OUT / "ipt_f4_dp.pt")
with open(OUT / "ipt_f4.json", "w") as f:
    json.dump({"arch": "ipt", "n_feats": F, "num_heads": 4, "num_layers": 1}, f)
    f.write("\n")


# 3. A weight that would run a command when unpickled by pickle / torch.load(weights_only=False).
class Evil:
    def __reduce__(self):
        return (os.system, ("touch adaptir_import_pwned",))


torch.save({"state_dict": {"net.sub_mean.weight": Evil()}, "epoch": 0}, OUT / "evil_global.pt")

# 4. A Lightning-shaped checkpoint without its weights.
torch.save({"epoch": 3, "global_step": 12, "pytorch-lightning_version": "2.5.0", "optimizer_states": [],
            "hyper_parameters": {"args": argparse.Namespace(de_type="derain")}}, OUT / "no_state_dict.ckpt")

for p in sorted(OUT.iterdir()):
    print(f"{p.name}: {p.stat().st_size} bytes")
print(f"torch {torch.__version__}")
