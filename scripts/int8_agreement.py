#!/usr/bin/env python3
"""How close an int8 file's output is to its f32 file's, in ONNX Runtime and OpenVINO on the CPU this runs on.

    .venv/bin/python scripts/int8_agreement.py GOLDEN.safetensors FILE.onnx FILE.int8.onnx [MORE.int8.onnx ...]

Prints, per int8 file and runtime, the PSNR (peak 1) and largest difference of its output against the f32 file's in
the same runtime, on the golden's inputs (`adaptir export --golden`), one thread.

To see what a CPU without VNNI computes (ONNX Runtime's and OpenVINO's u8 x s8 kernels then add byte products in
saturating int16 pairs: scripts/int8_saturation.py), run it under QEMU's user-mode emulation of such a CPU, with
the project's .venv packages (`apt-get install qemu-user`; minutes per file, the emulation is slow):

    PYTHONPATH=.venv/lib/python3.11/site-packages qemu-x86_64 -cpu Haswell /usr/bin/python3 \\
        scripts/int8_agreement.py GOLDEN F32 INT8...

OpenVINO prints the capabilities it found (no BF16 under Haswell), which shows that the emulated CPU is the one
its kernels were chosen for.
"""
import sys

import numpy as np
import onnxruntime as ort
import openvino as ov

from ort_denormals import load_safetensors


def main():
    golden, f32, *int8s = sys.argv[1:]
    x = load_safetensors(golden)["input"].astype(np.float32)
    core = ov.Core()
    print("OpenVINO CPU capabilities:", " ".join(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")))

    def run_ort(path):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        return s.run(None, {s.get_inputs()[0].name: x})[0]

    def run_openvino(path):
        c = core.compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
        return c(x)[0]

    for runtime, run in (("ONNX Runtime", run_ort), ("OpenVINO", run_openvino)):
        ref = run(f32).astype(np.float64)
        for path in int8s:
            y = run(path)
            mse = np.mean((y - ref) ** 2)
            print(f"{runtime}: {path}: {10 * np.log10(1.0 / mse):.2f} dB from the f32 file, largest difference "
                  f"{np.abs(y - ref).max():.4g}")


if __name__ == "__main__":
    main()
