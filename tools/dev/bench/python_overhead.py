"""What the Python binding costs on top of the C++ call, on the tiny models of omniflux-tiny (so the
model work is small and the overhead shows). Each round runs the same request twice on the same
pipeline object, alternating: once timed in C++ around the engine call (omniflux._omniflux._time_*,
no Python in between), once through the public Python method. Reported per case: p50 of each, and
the p50 and p95 of the paired difference (Python minus C++), in milliseconds, one JSON line each.

    PYTHONPATH=build/python ~/.cache/omniflux/torch-2.11.0/bin/python tools/dev/bench/python_overhead.py \
        --bin build/bin --rounds 30 --threads 2
"""
import argparse
import json
import os
import subprocess
import tempfile
import time

import numpy as np

import omniflux
from omniflux import _omniflux as _C


def percentile(v, p):
    return float(np.percentile(np.asarray(v), p, method="inverted_cdf"))


def report(case, cpp, py):
    d = [b - a for a, b in zip(cpp, py)]
    print(json.dumps({"bench": "python_overhead", "case": case, "rounds": len(d), "cpp_p50_ms": round(percentile(cpp, 50), 2),
                      "python_p50_ms": round(percentile(py, 50), 2), "diff_p50_ms": round(percentile(d, 50), 3),
                      "diff_p95_ms": round(percentile(d, 95), 3)}), flush=True)


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=os.path.join(here, "../../../build/bin"))
    p.add_argument("--tokenizers", default=os.path.join(here, "../../../tests/fixtures/tokenizers"))
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--tokens", type=int, default=12)
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="omniflux-pybench-") as tmp:
        subprocess.run([os.path.join(a.bin, "omniflux-tiny"), "--out", tmp, "--seed", "5", "--only", "flux_1_dev",
                        "--only", "uniworld_v1", "--only", "siglip2", "--only", "x_omni", "--tokenizers", a.tokenizers],
                       check=True, stdout=subprocess.DEVNULL)
        uw = omniflux.UniWorld.load(os.path.join(tmp, "uniworld-v1"), flux=os.path.join(tmp, "flux.1-dev"),
                                    siglip=os.path.join(tmp, "siglip2"), threads=a.threads)
        xo = omniflux.XOmni.load(os.path.join(tmp, "x-omni"), threads=a.threads)
        prompt, s = "A lighthouse on a cliff at dusk", a.size
        picture = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)

        cases = {
            "uniworld_t2i_pil": lambda: uw.generate(prompt, width=s, height=s, steps=a.steps, seed=1, progress=False),
            "uniworld_t2i_pt": lambda: uw.generate(prompt, width=s, height=s, steps=a.steps, seed=1, output_type="pt",
                                                   progress=False),
            "uniworld_t2i_tqdm": lambda: uw.generate(prompt, width=s, height=s, steps=a.steps, seed=1),
        }
        for name, fn in cases.items():
            fn()  # warm-up
            cpp, py = [], []
            for _ in range(a.rounds):
                cpp.append(_C._time_uniworld_generate(uw._impl, prompt, s, s, a.steps, 1))
                py.append(timed(fn))
            report(name, cpp, py)

        import torch

        t = torch.from_numpy(picture)
        fn = lambda: xo.chat("What is in this picture?", image=picture, max_new_tokens=a.tokens)  # noqa: E731
        fn()
        cpp, py = [], []
        for _ in range(a.rounds):
            cpp.append(_C._time_xomni_chat(xo._impl, t, "What is in this picture?", a.tokens))
            py.append(timed(fn))
        report(f"xomni_chat_{a.tokens}_tokens", cpp, py)


if __name__ == "__main__":
    main()
