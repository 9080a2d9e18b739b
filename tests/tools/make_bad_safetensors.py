#!/usr/bin/env python3
"""Writes the hand-made corpus of malformed safetensors files in tests/fixtures/bad_safetensors/.

Each file breaks one rule of the format; cases.json maps the file to a phrase the loader's error
must contain. Run from the repository root: python3 tests/tools/make_bad_safetensors.py
"""
import json
import os
import struct

OUT = os.path.join("tests", "fixtures", "bad_safetensors")


def st(header, data=b"", hlen=None, raw_header=None):
    h = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    n = len(h) if hlen is None else hlen
    return struct.pack("<Q", n) + h + data


def t(dtype, shape, b, e):
    return {"dtype": dtype, "shape": shape, "data_offsets": [b, e]}


f32x2 = b"\x00\x00\x80\x3f" * 2
cases = {
    "empty": (b"", "too small"),
    "short_length": (b"\x10\x00\x00", "too small"),
    "header_len_huge": (struct.pack("<Q", 1 << 40) + b"{}", "header length too large"),
    "header_len_past_eof": (st({}, hlen=500), "exceeds the file"),
    "header_len_zero": (struct.pack("<Q", 0), "does not start with '{'"),
    "header_not_object": (st(None, raw_header=b"[1,2,3]"), "does not start with '{'"),
    "header_bad_json": (st(None, raw_header=b'{"a": {"dtype": "F32",'), "not valid JSON"),
    "header_bad_utf8": (st(None, raw_header=b'{"\xff\xfe": 1}'), "UTF-8"),
    "header_trailing_garbage": (st(None, raw_header=b'{} xx'), "not valid JSON"),
    "unknown_dtype": (st({"a": t("F128", [2], 0, 8)}, f32x2), "unsupported dtype"),
    "dtype_not_string": (st({"a": {"dtype": 5, "shape": [2], "data_offsets": [0, 8]}}, f32x2), "no dtype"),
    "missing_shape": (st({"a": {"dtype": "F32", "data_offsets": [0, 8]}}, f32x2), "no shape"),
    "negative_dim": (st({"a": t("F32", [-2], 0, 8)}, f32x2), "invalid 'shape'"),
    "float_dim": (st({"a": t("F32", [2.5], 0, 8)}, f32x2), "invalid 'shape'"),
    "shape_overflow": (st({"a": t("U8", [1 << 40, 1 << 40], 0, 8)}, f32x2), "overflows"),
    "missing_offsets": (st({"a": {"dtype": "F32", "shape": [2]}}, f32x2), "data_offsets"),
    "offsets_three": (st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4, 8]}}, f32x2), "data_offsets"),
    "offsets_reversed": (st({"a": t("F32", [0], 8, 0)}, f32x2), "reversed"),
    "offsets_out_of_bounds": (st({"a": t("F32", [4], 0, 16)}, f32x2), "out of the file's bounds"),
    "length_mismatch": (st({"a": t("F32", [3], 0, 8)}, f32x2), "does not match dtype x shape"),
    "overlap": (st({"a": t("F32", [2], 0, 8), "b": t("F32", [1], 4, 8)}, f32x2), "overlaps"),
    "gap": (st({"a": t("F32", [1], 4, 8)}, f32x2), "gap in the data region"),
    "trailing_data": (st({"a": t("F32", [1], 0, 4)}, f32x2), "do not cover the data region"),
    "duplicate_name": (st(None, raw_header=b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                                           b'"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}'),
                       "duplicate tensor name"),
    "metadata_not_object": (st({"__metadata__": [1], "a": t("F32", [2], 0, 8)}, f32x2), "__metadata__ is not an object"),
    "metadata_value_not_string": (st({"__metadata__": {"k": 1}, "a": t("F32", [2], 0, 8)}, f32x2), "not a string"),
    "entry_not_object": (st({"a": [1, 2]}, f32x2), "not an object"),
    "truncated_data": (st({"a": t("F32", [2], 0, 8)}, f32x2)[:-3], "out of the file's bounds"),
    # The reference (serde_json) rejects NUL padding after the header JSON as trailing characters.
    "header_nul_padded": (st(None, raw_header=b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}\0\0\0',
                             data=f32x2), "NUL byte"),
    "header_nul_then_garbage": (st(None, raw_header=b'{}\0{"x": 1}'), "NUL byte"),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    index = {}
    for name, (blob, phrase) in sorted(cases.items()):
        with open(os.path.join(OUT, name + ".safetensors"), "wb") as f:
            f.write(blob)
        index[name + ".safetensors"] = phrase
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(index, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{len(index)} files in {OUT}")


if __name__ == "__main__":
    main()
