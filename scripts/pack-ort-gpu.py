#!/usr/bin/env python3
"""Pack ONNX Runtime's CUDA build (onnxruntime-gpu 1.31.1, CUDA 13) small enough to travel to a lent GPU machine.

The device tool carries at most 64 MiB with the working tree (35 MiB), and the wheel's CUDA provider is 271 MiB
(208 MiB of it GPU code for six GPU generations, plus the kernels of LLM operators we never export). So this script,
for CARRYING ONLY (never ship the result):
  1. downloads the pinned wheel (pip, into .cuda/ort-gpu/) and takes its three libraries: libonnxruntime.so.1.31.1
     (the CPU provider is in it too), libonnxruntime_providers_shared.so, libonnxruntime_providers_cuda.so;
  2. in the CUDA provider's `.nv_fatbin` section, zeroes the payload of every cubin that is not for --arch (90: H100
     / H200), keeping every header and offset: the CUDA runtime picks the cubin of the device's own generation by
     its header, so the zeroed ones are never read on that card (and SASS of another generation cannot run there
     anyway);
  3. zeroes, for --arch too, the cubins whose kernels ALL belong to LLM operator families that adaptir's exports
     never contain (flash attention, MoE and weight-only-quantised GEMMs, paged / sparse / linear attention, beam
     search, fp8, 4-bit MatMul, dropout); cubins are named from their kernels' symbols (zstd-compressed payloads
     are read with the `zstd` command);
  4. writes each library xz-compressed into --out (default .gpu-carry/ort-gpu/): about 30 MiB in all.
A graph that needed a zeroed kernel would fail at its first launch with a CUDA error (never compute silently
wrong), so a validation that passes with this library passes with the wheel's.

  python3 scripts/pack-ort-gpu.py [--arch 90] [--out .gpu-carry/ort-gpu]
"""
import argparse
import glob
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys
import zipfile

VERSION = "1.31.1"
LIBS = [f"libonnxruntime.so.{VERSION}", "libonnxruntime_providers_shared.so", "libonnxruntime_providers_cuda.so"]
FATBIN_MAGIC = 0xBA55ED50
# Kernel-symbol patterns of the operator families that adaptir never exports (all fp16/bf16/int4/fp8 LLM kernels).
UNUSED_FAMILIES = re.compile(
    r"5flash|MoeFC|3llm|fpA_intB|GroupProblemShape|[Mm]oe|Beam|Sampling|GroupQuery|Gqa|MatMulNBits|4bits"
    r"|BlockwiseQuant|Sm100|Sm120|masked_multihead|kernel_mha|gated_delta|linear_attention|sparse_attention|fp8"
    r"|BatchTopK|deform_conv|InitKernel|GetSeqlensKV|Dropout|RandomKernel|ClearSplitKSemaphores"
)


def die(msg):
    print(f"pack-ort-gpu: {msg}", file=sys.stderr)
    sys.exit(2)


def wheel(cache):
    found = glob.glob(os.path.join(cache, f"onnxruntime_gpu-{VERSION}-*.whl"))
    if not found:
        os.makedirs(cache, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--python-version", "3.12", "--platform", "manylinux_2_28_x86_64", "-d", cache,
               f"onnxruntime-gpu=={VERSION}"]
        print("pack-ort-gpu: " + " ".join(cmd))
        if subprocess.run(cmd).returncode != 0:
            die(f"pip could not download onnxruntime-gpu=={VERSION}")
        found = glob.glob(os.path.join(cache, f"onnxruntime_gpu-{VERSION}-*.whl"))
    if not found:
        die(f"no onnxruntime_gpu-{VERSION} wheel in {cache}")
    return found[0]


def section(data, name):
    """(offset, size) of an ELF64 section by name."""
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    heads = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names = heads[shstrndx][4]
    for h in heads:
        start = names + h[0]
        if data[start:data.index(b"\0", start)].decode() == name:
            return h[4], h[5]
    die(f"no section {name}")


def entries(data, off):
    """The (header offset, header size, payload size, arch) of each entry of the fatbin container at off."""
    _, _, hsize, fsize = struct.unpack_from("<IHHQ", data, off)
    e, stop = off + hsize, off + hsize + fsize
    out = []
    while e < stop:
        _, _, ehsize, psize = struct.unpack_from("<HHIQ", data, e)
        arch = struct.unpack_from("<I", data, e + 28)[0]
        out.append((e, ehsize, psize, arch))
        e += ehsize + psize
    if e != stop:
        die(f"fatbin container at {off:#x}: entries end at {e:#x}, expected {stop:#x} (unknown layout)")
    return out, stop


def kernel_names(payload):
    if payload[:4] == b"\x28\xb5\x2f\xfd":  # zstd frame (CUDA 13's compressed cubins)
        if shutil.which("zstd") is None:
            return None
        payload = subprocess.run(["zstd", "-d", "-q", "-c"], input=payload, capture_output=True).stdout
    return set(m.decode() for m in re.findall(rb"\.text\.(_Z\w+)", payload))


def prune(data, arch):
    fat_off, fat_size = section(data, ".nv_fatbin")
    off, end = fat_off, fat_off + fat_size
    stats = {"containers": 0, "other_arch_bytes": 0, "unused_family_bytes": 0, "kept_bytes": 0}
    while off < end - 16:
        if struct.unpack_from("<I", data, off)[0] != FATBIN_MAGIC:
            off += 8  # containers are 8-byte aligned, padding between them
            continue
        stats["containers"] += 1
        ents, stop = entries(data, off)
        for e, ehsize, psize, a in ents:
            p0, p1 = e + ehsize, e + ehsize + psize
            if a != arch:
                data[p0:p1] = bytes(psize)
                stats["other_arch_bytes"] += psize
                continue
            names = kernel_names(bytes(data[p0:p1]))
            if names and all(UNUSED_FAMILIES.search(n) for n in names):
                data[p0:p1] = bytes(psize)
                stats["unused_family_bytes"] += psize
            else:
                stats["kept_bytes"] += psize
        off = stop
    return stats


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--arch", type=int, default=int(os.environ.get("CUDA_COMPUTE_CAP", "90")))
    ap.add_argument("--out", default=os.path.join(root, ".gpu-carry", "ort-gpu"))
    ap.add_argument("--cache", default=os.path.join(root, ".cuda", "ort-gpu"))
    args = ap.parse_args()
    whl = wheel(args.cache)
    os.makedirs(args.out, exist_ok=True)
    with zipfile.ZipFile(whl) as z:
        for lib in LIBS:
            data = bytearray(z.read(f"onnxruntime/capi/{lib}"))
            if lib == "libonnxruntime_providers_cuda.so":
                stats = prune(data, args.arch)
                print(f"pack-ort-gpu: {lib}: sm_{args.arch} only, unused LLM kernels zeroed: {json.dumps(stats)}")
            dst = os.path.join(args.out, lib + ".xz")
            with lzma.open(dst + ".tmp", "wb", preset=9 | lzma.PRESET_EXTREME) as f:
                f.write(data)
            os.replace(dst + ".tmp", dst)
            print(f"pack-ort-gpu: {dst}: {os.path.getsize(dst) / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
