#!/usr/bin/env python3
"""Writes tests/fixtures/images/formats/: small PNG, JPEG and WebP files and, for each, the pixels
Pillow decodes (Image.open(f).convert("RGB")), as raw 8-bit RGB (.rgb, row-major, no header).
tests/test_image_formats.cpp asserts that omniflux::decode_image gives exactly these bytes.

Pillow: 13.0.0 from PyPI (its wheel bundles libjpeg-turbo 3.2.0 and libwebp 1.6.0; omniflux links
Debian 12's libjpeg-turbo 2.1.5 and libwebp 1.2.4, so the test also shows that the versions agree).

  python3 -m venv /tmp/pilvenv && /tmp/pilvenv/bin/pip install pillow==13.0.0 numpy
  /tmp/pilvenv/bin/python tests/tools/make_image_formats.py

The 16-bit, 2/4-bit grey and interlaced PNGs are written by hand below (Pillow writes none of
them). cases.json lists every case: file, size and a note. many_scans.jpg (refused: too many
scans) comes from tests/tools/make_many_scans_jpeg.c. It also writes the image fuzz target's
seeds, tests/fuzz/corpus/image/.
"""
import io
import json
import os
import struct
import zlib

import numpy as np
import PIL
from PIL import Image, ImageOps

PILLOW = "13.0.0"
assert PIL.__version__ == PILLOW, f"run with Pillow {PILLOW}, not {PIL.__version__}"

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "images", "formats")
rng = np.random.default_rng(22)
cases = []


def path(name):
    return os.path.join(OUT, name)


def add(name, note):
    """Decodes `name` with Pillow, stores the expected RGB bytes and records the case."""
    im = Image.open(path(name))
    rgb = np.asarray(im.convert("RGB"))
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    with open(path(name + ".rgb"), "wb") as f:
        f.write(rgb.tobytes())
    cases.append({"file": name, "width": rgb.shape[1], "height": rgb.shape[0],
                  "pillow_mode": im.mode, "note": note})


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png(name, width, height, depth, colour, rows, interlaced=False, extra=b""):
    """rows: list of filtered scanlines (bytes, filter type 0 prepended by this function)."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 1 if interlaced else 0)
    raw = b"".join(b"\x00" + r for r in rows)
    with open(path(name), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra
                + png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b""))


def pack_bits(values, depth):
    """Packs a row of small integers MSB first, as PNG stores 1, 2 and 4-bit samples."""
    per = 8 // depth
    out = bytearray()
    for i in range(0, len(values), per):
        b = 0
        for k in range(per):
            v = int(values[i + k]) if i + k < len(values) else 0
            b |= v << (8 - depth * (k + 1))
        out.append(b)
    return bytes(out)


def adam7_rows(pixels):
    """Scanlines of an Adam7-interlaced 8-bit image: the seven passes, each row in turn."""
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
              (0, 1, 1, 2)]
    rows = []
    for x0, y0, dx, dy in passes:
        sub = pixels[y0::dy, x0::dx]
        if sub.size:
            rows += [sub[y].tobytes() for y in range(sub.shape[0])]
    return rows


def smooth(w, h, noise):
    """A picture with gradients, a ripple, a hard edge and some noise: JPEG's IDCT, upsampling and
    colour conversion all have work to do."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = x * 255 / max(w - 1, 1)
    g = y * 255 / max(h - 1, 1)
    b = 128 + 90 * np.sin(x / 3.1 + y / 4.7)
    img = np.stack([r, g, b], -1)
    img[:, w // 2:, 0] = 255 - img[:, w // 2:, 0]  # a vertical edge in red
    img += rng.normal(0, noise, img.shape)
    return img.clip(0, 255).astype(np.uint8)


def png_cases():
    w, h = 20, 14
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (h, w), dtype=np.uint8)
    alpha = rng.integers(0, 256, (h, w), dtype=np.uint8)
    Image.fromarray(rgb, "RGB").save(path("rgb8.png"))
    add("rgb8.png", "8-bit RGB")
    Image.fromarray(rgb, "RGB").save(path("rgb8_trns.png"), transparency=tuple(int(v) for v in rgb[0, 0]))
    add("rgb8_trns.png", "8-bit RGB with a tRNS colour: ignored, like Pillow's convert")
    Image.fromarray(grey, "L").save(path("grey8.png"))
    add("grey8.png", "8-bit grey: replicated")
    Image.fromarray(np.stack([grey, alpha], -1), "LA").save(path("grey_alpha8.png"))
    add("grey_alpha8.png", "8-bit grey + alpha: alpha dropped")
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path("rgba8.png"))
    add("rgba8.png", "8-bit RGBA: alpha dropped, not composited")
    Image.fromarray(grey > 127).save(path("bilevel.png"))
    add("bilevel.png", "1-bit grey")
    pal = Image.fromarray((grey // 16).astype(np.uint8), "P")
    pal.putpalette(rng.integers(0, 256, 16 * 3, dtype=np.uint8).tolist())
    pal.save(path("palette4_trns.png"), bits=4, transparency=5)
    add("palette4_trns.png", "4-bit palette with tRNS: palette colours, alpha dropped")
    pal8 = Image.fromarray(grey, "P")
    pal8.putpalette(rng.integers(0, 256, 256 * 3, dtype=np.uint8).tolist())
    pal8.save(path("palette8.png"))
    add("palette8.png", "8-bit palette")
    for depth in (2, 4):
        g = rng.integers(0, 1 << depth, (h, w), dtype=np.uint8)
        write_png(f"grey{depth}.png", w, h, depth, 0, [pack_bits(g[y], depth) for y in range(h)])
        add(f"grey{depth}.png", f"{depth}-bit grey: scaled to 8 bits")
    write_png("rgb8_adam7.png", w, h, 8, 2, adam7_rows(rgb), interlaced=True)
    add("rgb8_adam7.png", "8-bit RGB, Adam7-interlaced")
    # 16 bits: Pillow keeps the high byte for RGB(A) and grey+alpha, but clips grey (mode I;16) to
    # 255, so grey16 mixes small and large samples.
    for channels, colour, name in ((1, 0, "grey16"), (2, 4, "grey_alpha16"), (3, 2, "rgb16"),
                                   (4, 6, "rgba16")):
        s = rng.integers(0, 65536, (h, w, channels), dtype=np.uint16)
        if channels == 1:
            s[::2] = rng.integers(0, 300, (len(s[::2]), w, 1), dtype=np.uint16)
        write_png(f"{name}.png", w, h, 16, colour,
                  [s[y].astype(">u2").tobytes() for y in range(h)])
        add(f"{name}.png", f"16-bit, colour type {colour}")


def exif_orientation(value):
    exif = Image.Exif()
    exif[0x0112] = value  # Orientation
    return exif.tobytes()


def jpeg_cases():
    w, h = 48, 32
    pic = Image.fromarray(smooth(w, h, 12), "RGB")
    for sub, tag in ((2, "420"), (1, "422"), (0, "444")):
        pic.save(path(f"baseline_{tag}.jpg"), quality=85, subsampling=sub)
        add(f"baseline_{tag}.jpg", f"baseline, {tag[0]}:{tag[1]}:{tag[2]}")
        pic.save(path(f"progressive_{tag}.jpg"), quality=85, subsampling=sub, progressive=True)
        add(f"progressive_{tag}.jpg", f"progressive, {tag[0]}:{tag[1]}:{tag[2]}")
    odd = Image.fromarray(smooth(45, 31, 8), "RGB")
    odd.save(path("baseline_420_odd.jpg"), quality=90, subsampling=2)
    add("baseline_420_odd.jpg", "baseline 4:2:0, odd size (partial MCUs at the right and bottom)")
    odd.save(path("progressive_422_odd.jpg"), quality=60, subsampling=1, progressive=True,
             optimize=True)
    add("progressive_422_odd.jpg", "progressive 4:2:2, odd size, optimised Huffman tables")
    pic.save(path("restart_420.jpg"), quality=75, subsampling=2, restart_marker_blocks=2)
    add("restart_420.jpg", "baseline 4:2:0 with restart markers")
    pic.convert("L").save(path("grey.jpg"), quality=85)
    add("grey.jpg", "greyscale: replicated")
    pic.convert("CMYK").save(path("cmyk.jpg"), quality=90)
    add("cmyk.jpg", "CMYK (Adobe, inverted): Pillow's CMYK to RGB conversion")
    # EXIF Orientation 6 (rotate 90 degrees to display). Image.open(...).convert("RGB") keeps the
    # stored pixels; only ImageOps.exif_transpose would rotate them.
    pic.save(path("exif_rotate90.jpg"), quality=85, exif=exif_orientation(6))
    add("exif_rotate90.jpg", "EXIF Orientation 6: not applied (stored order), like the references")
    with Image.open(path("exif_rotate90.jpg")) as im:
        assert im.getexif()[0x0112] == 6
        assert ImageOps.exif_transpose(im).size == (h, w)  # the tag is real: transposing rotates


def webp_cases():
    w, h = 40, 30
    pic = smooth(w, h, 10)
    alpha = (np.arange(w)[None, :] * 6 + np.arange(h)[:, None] * 3).clip(0, 255).astype(np.uint8)
    rgba = np.dstack([pic, np.broadcast_to(alpha, (h, w))])
    Image.fromarray(pic, "RGB").save(path("lossless.webp"), lossless=True)
    add("lossless.webp", "lossless (VP8L)")
    Image.fromarray(rgba, "RGBA").save(path("lossless_alpha.webp"), lossless=True, exact=True)
    add("lossless_alpha.webp", "lossless with alpha: alpha dropped")
    Image.fromarray(pic, "RGB").save(path("lossy.webp"), quality=80)
    add("lossy.webp", "lossy (VP8)")
    Image.fromarray(rgba, "RGBA").save(path("lossy_alpha.webp"), quality=80)
    add("lossy_alpha.webp", "lossy with an alpha plane (VP8X + ALPH): alpha dropped")
    Image.fromarray(smooth(33, 17, 6), "RGB").save(path("lossy_odd.webp"), quality=50)
    add("lossy_odd.webp", "lossy, odd size")


def fuzz_seeds():
    """Tiny seeds (8x8 to 12x7) for tests/fuzz/fuzz_image.cpp, one per decoder path."""
    seeds = os.path.join(OUT, "..", "..", "..", "fuzz", "corpus", "image")
    os.makedirs(seeds, exist_ok=True)
    for n in os.listdir(seeds):
        os.remove(os.path.join(seeds, n))
    pic = Image.fromarray(smooth(12, 7, 20), "RGB")
    rgba = Image.fromarray(np.dstack([smooth(12, 7, 20), smooth(12, 7, 40)[:, :, 0]]), "RGBA")
    out = lambda name: os.path.join(seeds, name)  # noqa: E731
    pic.save(out("rgb.png"))
    pic.convert("P", palette=Image.Palette.ADAPTIVE, colors=8).save(out("palette.png"), transparency=2)
    pic.save(out("baseline_420.jpg"), quality=50, subsampling=2)
    pic.save(out("progressive_444.jpg"), quality=50, subsampling=0, progressive=True)
    pic.convert("L").save(out("grey.jpg"), quality=50)
    pic.convert("CMYK").save(out("cmyk.jpg"), quality=50)
    pic.save(out("lossy.webp"), quality=30)
    rgba.save(out("lossy_alpha.webp"), quality=30)
    rgba.save(out("lossless_alpha.webp"), lossless=True)
    g16 = rng.integers(0, 65536, (7, 12, 1), dtype=np.uint16)
    raw = b"".join(b"\x00" + g16[y].astype(">u2").tobytes() for y in range(7))
    with open(out("grey16.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 12, 7, 16, 0, 0, 0, 0))
                + png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b""))
    print("fuzz seeds: %d bytes" % sum(os.path.getsize(out(n)) for n in os.listdir(seeds)))


def main():
    os.makedirs(OUT, exist_ok=True)
    for n in os.listdir(OUT):
        if n != "many_scans.jpg":  # written by make_many_scans_jpeg.c
            os.remove(path(n))
    png_cases()
    jpeg_cases()
    webp_cases()
    fuzz_seeds()
    with open(path("cases.json"), "w") as f:
        json.dump({"pillow": PILLOW, "cases": cases}, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(path(n)) for n in os.listdir(OUT))
    print("%d cases, %d files, %d bytes" % (len(cases), len(os.listdir(OUT)), total))


if __name__ == "__main__":
    main()
