"""The cost of the Ray Serve hop: the same requests sent straight to an omniflux-server and through
the Ray application, one after the other in one run (docs/beyond-one-machine.md).

  python deploy/ray/bench_router.py --direct http://127.0.0.1:8080 --ray http://127.0.0.1:8000 \
      [--requests 50] [--concurrency 1]

Prints, for each target and request kind, requests per second and the p50 and p95 latency."""
import argparse
import concurrent.futures
import statistics
import time

import requests

KINDS = {
    "models": ("GET", "/v1/models", None),
    "generation 64x64, 2 steps": ("POST", "/v1/images/generations",
                                  {"model": "flux.1-dev", "prompt": "a red cube", "size": "64x64", "steps": 2}),
}


def run(base, method, path, body, n, concurrency, headers):
    session = requests.Session()
    for _ in range(2):  # warm-up: connections, first-request costs
        session.request(method, base + path, json=body, headers=headers, timeout=120).raise_for_status()

    def one(_):
        t = time.perf_counter()
        r = requests.request(method, base + path, json=body, headers=headers, timeout=120)
        r.raise_for_status()
        return time.perf_counter() - t

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        lat = sorted(pool.map(one, range(n)))
    wall = time.perf_counter() - start
    return n / wall, statistics.median(lat), lat[min(len(lat) - 1, int(0.95 * len(lat)))]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--direct", required=True)
    p.add_argument("--ray", required=True)
    p.add_argument("--requests", type=int, default=50)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--api-key", default="")
    a = p.parse_args()
    headers = {"Authorization": "Bearer " + a.api_key} if a.api_key else {}
    print("%-28s %-7s %8s %9s %9s" % ("request", "target", "req/s", "p50 ms", "p95 ms"))
    for kind, (method, path, body) in KINDS.items():
        for name, base in (("direct", a.direct), ("ray", a.ray)):
            rps, p50, p95 = run(base, method, path, body, a.requests, a.concurrency, headers)
            print("%-28s %-7s %8.1f %9.1f %9.1f" % (kind, name, rps, p50 * 1000, p95 * 1000))


if __name__ == "__main__":
    main()
