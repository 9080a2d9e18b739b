#!/usr/bin/python3
"""Writes the small decoder fixtures in tests/fixtures/images/ for tests/test_image.cpp.

Each PNG or JPEG input NAME comes with NAME.expected.png, the 8-bit RGB image omniflux::load_image
must return: Debian 12's Pillow 9.4.0 (python3-pil), Image.open(NAME).convert("RGB"). For the
hand-written 16-bit PNGs it is what Pillow gives: the high byte of each sample, alpha dropped, except
16-bit grey (Pillow's mode I, I;16 in later versions), which is clipped to 255. The BMP, TGA, PNM,
PSD and GIF files have no .expected.png: omniflux refuses those formats, and the tests check that
it does. The 16-bit PNGs and the PSD are written by hand below (Pillow writes neither).
More formats, with Pillow 13: tests/tools/make_image_formats.py.

Run: /usr/bin/python3 tests/tools/gen_image_fixtures.py
"""
import os
import struct
import zlib

import numpy as np
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "images")
W, H = 13, 9
rng = np.random.default_rng(7)


def path(name):
    return os.path.join(OUT, name)


def save_expected(name, rgb):
    assert rgb.dtype == np.uint8 and rgb.shape == (H, W, 3)
    Image.fromarray(rgb, "RGB").save(path(name + ".expected.png"))


def pil_expected(name):
    save_expected(name, np.asarray(Image.open(path(name)).convert("RGB")))


def png_chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def write_png16(name, samples):
    """samples: uint16 [H, W, C], C = 1, 2, 3 or 4."""
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[samples.shape[2]]
    raw = b"".join(b"\x00" + samples[y].astype(">u2").tobytes() for y in range(samples.shape[0]))
    ihdr = struct.pack(">IIBBBBB", samples.shape[1], samples.shape[0], 16, colour, 0, 0, 0)
    with open(path(name), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
                + png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b""))


def write_psd(name, rgb):
    """Minimal RGB PSD: header, empty colour mode / resources / layers, raw planar image data."""
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, rgb.shape[0], rgb.shape[1], 8, 3)
    planar = b"".join(rgb[:, :, c].tobytes() for c in range(3))
    with open(path(name), "wb") as f:
        f.write(header + struct.pack(">III", 0, 0, 0) + struct.pack(">H", 0) + planar)


def main():
    os.makedirs(OUT, exist_ok=True)
    for n in os.listdir(OUT):
        if os.path.isfile(path(n)):  # formats/ is make_image_formats.py's
            os.remove(path(n))
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (H, W), dtype=np.uint8)
    alpha = rng.integers(0, 256, (H, W), dtype=np.uint8)

    Image.fromarray(rgb, "RGB").save(path("rgb.png"))
    Image.fromarray(grey, "L").save(path("grey.png"))
    Image.fromarray(np.stack([grey, alpha], -1), "LA").save(path("grey_alpha.png"))
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path("rgba.png"))
    Image.fromarray(grey > 127).save(path("bilevel.png"))  # mode "1": 1-bit PNG
    pal = Image.fromarray((grey // 32).astype(np.uint8), "P")
    pal.putpalette(rng.integers(0, 256, 8 * 3, dtype=np.uint8).tolist())
    pal.save(path("palette.png"), transparency=3)
    for n in ["rgb.png", "grey.png", "grey_alpha.png", "rgba.png", "bilevel.png", "palette.png"]:
        pil_expected(n)

    g16 = rng.integers(0, 65536, (H, W, 1), dtype=np.uint16)
    write_png16("grey16.png", g16)
    save_expected("grey16.png", np.repeat(np.minimum(g16, 255).astype(np.uint8), 3, axis=2))
    rgb16 = rng.integers(0, 65536, (H, W, 3), dtype=np.uint16)
    write_png16("rgb16.png", rgb16)
    save_expected("rgb16.png", (rgb16 >> 8).astype(np.uint8))
    rgba16 = rng.integers(0, 65536, (H, W, 4), dtype=np.uint16)
    write_png16("rgba16.png", rgba16)
    save_expected("rgba16.png", (rgba16[:, :, :3] >> 8).astype(np.uint8))

    Image.fromarray(rgb, "RGB").save(path("rgb.bmp"))
    Image.fromarray(rgb, "RGB").save(path("rgb.tga"), compression="tga_rle")
    Image.fromarray(rgb, "RGB").save(path("rgb.ppm"))
    Image.fromarray(grey, "L").save(path("grey.pgm"))
    write_psd("rgb.psd", rgb)

    # Two frames: a GIF, refused like the formats above.
    frames = []
    for _ in range(2):
        f = Image.fromarray(rng.integers(0, 16, (H, W), dtype=np.uint8), "P")
        f.putpalette(rng.integers(0, 256, 16 * 3, dtype=np.uint8).tolist())
        frames.append(f)
    frames[0].save(path("two_frames.gif"), save_all=True, append_images=frames[1:])
    assert Image.open(path("two_frames.gif")).n_frames == 2

    # A smooth JPEG.
    y, x = np.mgrid[0:H * 4, 0:W * 4].astype(np.float64)
    smooth = np.stack([x * 4, y * 6, 128 + 100 * np.sin(x / 5 + y / 7)], -1).clip(0, 255)
    Image.fromarray(smooth.astype(np.uint8), "RGB").save(path("smooth.jpg"), quality=90)
    Image.open(path("smooth.jpg")).convert("RGB").save(path("smooth.jpg.expected.png"))
    total = sum(os.path.getsize(path(n)) for n in os.listdir(OUT))
    print("%d files, %d bytes" % (len(os.listdir(OUT)), total))


if __name__ == "__main__":
    main()
