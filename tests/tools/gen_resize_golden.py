#!/usr/bin/python3
"""Writes the golden cases of omniflux::resize (tests/fixtures/resize/).

The expected outputs were produced with Debian 12's Pillow 9.4.0 (python3-pil, run by
/usr/bin/python3): PIL.Image.resize((w, h), resample) on RGB uint8 images, with box=None and
reducing_gap=None, which is what transformers' Qwen2VLImageProcessor calls. Sources and outputs
are saved as PNG (lossless); cases.json lists them. tests/test_image.cpp checks every case byte
for byte.

Run from anywhere: /usr/bin/python3 tests/tools/gen_resize_golden.py
"""
import json
import os

import numpy as np
import PIL
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "resize")
MAX_BYTES = 1_500_000
rng = np.random.default_rng(20240611)


def random_rgb(w, h):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def gradient(w, h):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * x / max(w - 1, 1)
    g = 255 * y / max(h - 1, 1)
    b = 127.5 + 127.5 * np.sin((x + 2 * y) / 9.0)
    return np.stack([r, g, b], -1).round().clip(0, 255).astype(np.uint8)


def hard_edges(w, h):
    # Checkerboard of 7-px squares with saturated colours and a 1-px white grid: bicubic overshoots
    # at every edge, so clipping to 0 and 255 is exercised.
    y, x = np.mgrid[0:h, 0:w]
    a = np.where(((x // 7 + y // 7) % 2)[..., None] == 1, [255, 0, 0], [0, 0, 255])
    a[(x % 11 == 0) | (y % 13 == 0)] = [255, 255, 255]
    a[(x + y) % 23 == 0] = [0, 0, 0]
    return a.astype(np.uint8)


SOURCES = {
    "rand_300x200": random_rgb(300, 200),
    "rand_37x23": random_rgb(37, 23),
    "rand_150x100": random_rgb(150, 100),
    "rand_100x120": random_rgb(100, 120),
    "rand_200x7": random_rgb(200, 7),
    "rand_5x3": random_rgb(5, 3),
    "rand_2x2": random_rgb(2, 2),
    "rand_1x1": random_rgb(1, 1),
    "rand_1x50": random_rgb(1, 50),
    "grad_256x160": gradient(256, 160),
    "edges_120x90": hard_edges(120, 90),
}

BIC, BIL = "bicubic", "bilinear"
# (source, width, height, filter)
CASES = [
    ("rand_300x200", 43, 29, BIC),    # ~1/7 both axes
    ("rand_300x200", 43, 29, BIL),
    ("rand_300x200", 150, 100, BIC),  # 0.5
    ("rand_300x200", 111, 74, BIL),   # 0.37
    ("rand_300x200", 3, 2, BIC),      # 1/100: very wide kernels
    ("rand_300x200", 300, 1, BIC),    # vertical only, to one row
    ("rand_300x200", 1, 200, BIL),    # horizontal only, to one column
    ("rand_300x200", 1, 1, BIC),
    ("rand_300x200", 300, 74, BIC),   # vertical only, 0.37
    ("rand_300x200", 112, 200, BIL),  # horizontal only
    ("rand_37x23", 111, 69, BIC),     # 3x
    ("rand_37x23", 111, 69, BIL),
    ("rand_37x23", 56, 35, BIC),      # ~1.5x
    ("rand_37x23", 37, 69, BIL),      # vertical only, 3x
    ("rand_37x23", 5, 100, BIC),      # down in x, up in y
    ("rand_37x23", 37, 23, BIC),      # same size: a copy
    ("rand_150x100", 140, 112, BIC),  # the qwen2_5_vl fixture's shape change
    ("rand_100x120", 112, 112, BIC),  # the uniworld_pipeline fixture's shape change
    ("rand_200x7", 29, 1, BIC),
    ("rand_200x7", 600, 21, BIL),     # 3x
    ("rand_5x3", 1, 1, BIL),
    ("rand_5x3", 2, 1, BIC),
    ("rand_5x3", 150, 100, BIC),      # 30x up
    ("rand_2x2", 5, 5, BIC),
    ("rand_2x2", 5, 5, BIL),
    ("rand_1x1", 7, 5, BIC),
    ("rand_1x50", 3, 17, BIL),
    ("rand_1x50", 1, 150, BIC),
    ("grad_256x160", 384, 240, BIC),  # 1.5x
    ("grad_256x160", 64, 40, BIL),    # 0.25
    ("grad_256x160", 97, 211, BIC),
    ("edges_120x90", 360, 270, BIC),  # 3x with overshoot
    ("edges_120x90", 17, 13, BIC),    # 1/7
    ("edges_120x90", 180, 45, BIL),
    ("edges_120x90", 120, 270, BIC),  # vertical only
]


def main():
    os.makedirs(OUT, exist_ok=True)
    for name in os.listdir(OUT):
        os.remove(os.path.join(OUT, name))
    for name, arr in SOURCES.items():
        Image.fromarray(arr, "RGB").save(os.path.join(OUT, name + ".png"), optimize=True)
    cases = []
    for i, (src, w, h, flt) in enumerate(CASES):
        im = Image.fromarray(SOURCES[src], "RGB")
        resample = Image.BICUBIC if flt == BIC else Image.BILINEAR
        out = im.resize((w, h), resample)
        out_name = "out_%02d_%s_%dx%d_%s.png" % (i, src, w, h, flt)
        out.save(os.path.join(OUT, out_name), optimize=True)
        cases.append({"src": src + ".png", "out": out_name, "w": w, "h": h, "filter": flt})
    meta = {"generator": "tests/tools/gen_resize_golden.py",
            "pillow_version": PIL.__version__, "cases": cases}
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print("%d cases, %d bytes, Pillow %s" % (len(cases), total, PIL.__version__))
    assert total <= MAX_BYTES, "fixtures too large"


if __name__ == "__main__":
    main()
