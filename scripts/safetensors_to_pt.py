#!/usr/bin/env python3
"""Write a safetensors state dict as a PyTorch zip checkpoint (what `torch.save(state_dict, path)` writes),
without torch: used to make the `.pt` test fixture, since torch cannot be installed on the build machines.

Format (torch >= 1.6 zip serialization): `<name>/data.pkl` pickles an OrderedDict of tensors, each reduced to
`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, OrderedDict())`, whose storage
is a persistent id `('storage', torch.<Type>Storage, key, 'cpu', numel)` pointing at `<name>/data/<key>`.

Usage: python3 scripts/safetensors_to_pt.py IN.safetensors OUT.pt   (needs numpy and safetensors)
"""
import collections
import io
import pickle
import sys
import types
import zipfile

from safetensors.numpy import load_file

# Stand-ins that pickle under torch's global names.
torch_mod = types.ModuleType("torch")
utils_mod = types.ModuleType("torch._utils")
sys.modules["torch"] = torch_mod
sys.modules["torch._utils"] = utils_mod
STORAGE = {}
for cls in ["FloatStorage", "DoubleStorage", "HalfStorage", "LongStorage", "IntStorage", "BoolStorage", "ByteStorage"]:
    t = type(cls, (), {"__module__": "torch"})
    setattr(torch_mod, cls, t)
    STORAGE[cls] = t
DTYPE_STORAGE = {"float32": "FloatStorage", "float64": "DoubleStorage", "float16": "HalfStorage",
                 "int64": "LongStorage", "int32": "IntStorage", "bool": "BoolStorage", "uint8": "ByteStorage"}


def _rebuild_tensor_v2(*args):
    raise RuntimeError("stand-in only")


_rebuild_tensor_v2.__module__ = "torch._utils"
utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2


class StorageRef:
    def __init__(self, key, cls, numel):
        self.key, self.cls, self.numel = key, cls, numel


class TensorRef:
    def __init__(self, storage, shape):
        self.storage, self.shape = storage, shape

    def __reduce__(self):
        stride, acc = [], 1
        for d in reversed(self.shape):
            stride.insert(0, acc)
            acc *= d
        return (_rebuild_tensor_v2,
                (self.storage, 0, tuple(self.shape), tuple(stride), False, collections.OrderedDict()))


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, StorageRef):
            return ("storage", obj.cls, obj.key, "cpu", obj.numel)
        return None


def main(src, dst):
    tensors = load_file(src)
    name = "archive"
    sd = collections.OrderedDict()
    blobs = {}
    for i, (k, v) in enumerate(tensors.items()):
        key = str(i)
        sd[k] = TensorRef(StorageRef(key, STORAGE[DTYPE_STORAGE[str(v.dtype)]], int(v.size)), list(v.shape))
        blobs[key] = v.astype(v.dtype.newbyteorder("<")).tobytes()
    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(sd)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{name}/data.pkl", buf.getvalue())
        z.writestr(f"{name}/byteorder", "little")
        for key, blob in blobs.items():
            z.writestr(f"{name}/data/{key}", blob)
        z.writestr(f"{name}/version", "3\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
