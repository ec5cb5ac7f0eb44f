#!/usr/bin/env python3
"""Issue 14: how far a streak remover can go on the three Rain100L pairs (models/ipt-tiny/MODEL_CARD.md, derain).

    python3 scripts/rain100l_tone.py ../shared/data/paired/Rain100L_sample3

Needs numpy and pillow (for example `python3 -m venv /tmp/v && /tmp/v/bin/pip install numpy pillow`). For each
pair it prints, on the Y channel (BT.601, the MATLAB `rgb2ycbcr` coefficients our `eval` uses, no crop):
- the rainy input's PSNR against the clean image (what `eval` reports as the baseline);
- the 10th, 50th and 90th percentiles of rainy - clean, in Y levels (0-255). Rain adds light, so a rainy image
  darker than its clean one almost everywhere (p90 < 0) differs from it by more than rain;
- the PSNR of "clean + the median offset": an image with every streak removed but the global offset kept, which is
  what a model that removes rain and leaves the tone alone would reach at best.
"""
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def y_channel(path):
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(np.float64)
    return 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0


def psnr(a, b):
    return 10.0 * np.log10(255.0**2 / np.mean((a - b) ** 2))


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: rain100l_tone.py PAIRS_DIR (with clean/ and rainy/)")
    root = Path(sys.argv[1])
    names = sorted(p.name for p in (root / "clean").iterdir())
    if not names:
        sys.exit(f"{root / 'clean'}: no images")
    rainy_psnr, kept_psnr = [], []
    print("pair | rainy input (dB) | rainy - clean p10 / p50 / p90 | clean + median offset (dB)")
    for name in names:
        clean, rainy = y_channel(root / "clean" / name), y_channel(root / "rainy" / name)
        if clean.shape != rainy.shape:
            sys.exit(f"{root / 'rainy' / name}: {rainy.shape}, expected the clean image's {clean.shape}")
        p10, p50, p90 = np.percentile(rainy - clean, [10, 50, 90])
        rainy_psnr.append(psnr(rainy, clean))
        kept_psnr.append(psnr(clean + p50, clean))
        print(f"{name} | {rainy_psnr[-1]:.2f} | {p10:.1f} / {p50:.1f} / {p90:.1f} | {kept_psnr[-1]:.2f}")
    print(f"mean | {np.mean(rainy_psnr):.2f} | | {np.mean(kept_psnr):.2f}")


if __name__ == "__main__":
    main()
