"""The Ray Serve application of deploy/ray on a real local cluster: a head and a second node on
loopback (`ray start`), deploy/ray/serve.yaml deployed with `serve deploy` on the tiny models, two
replicas (one per node, num_cpus 1 each). Checks: 16 concurrent mixed requests (generations, a
2-image edit, streamed chats) all succeed and both replicas serve some; a streamed generation's
progress events arrive as they are made; killing one replica's omniflux-server during load hangs
no request (each succeeds or gets a retryable 503) and Ray replaces the replica; `serve shutdown`
and `ray stop` leave no omniflux-server behind. Run by ctest as deploy.ray (label ray)."""
import base64
import concurrent.futures
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib

import pytest
import requests
import yaml

BIN = os.environ["OMNIFLUX_BIN_DIR"]
TOKENIZERS = os.environ["OMNIFLUX_TOKENIZERS"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
APP_DIR = os.path.join(ROOT, "deploy", "ray")
PYBIN = os.path.dirname(sys.executable)  # the venv of ray and serve


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_bytes(w, h, salt=0):
    raw = b"".join(b"\x00" + bytes(((x * 7 + y * 3 + salt) % 256) for x in range(w) for _ in range(3))
                   for y in range(h))
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def server_pids(models):
    out = subprocess.run(["pgrep", "-f", "omniflux-server.*" + models], capture_output=True, text=True).stdout
    return sorted(int(p) for p in out.split())


@pytest.fixture(scope="module")
def cluster():
    tmp = tempfile.mkdtemp(prefix="ofray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    models = os.path.join(tmp, "m")
    subprocess.run([os.path.join(BIN, "omniflux-tiny"), "--out", models, "--seed", "5", "--only", "flux_1_dev",
                    "--only", "uniworld_v1", "--only", "siglip2", "--only", "x_omni", "--tokenizers", TOKENIZERS],
                   check=True, stdout=subprocess.DEVNULL, timeout=120)
    gcs, dash, http = free_port(), free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=APP_DIR, RAY_USAGE_STATS_ENABLED="0", PATH=PYBIN + ":" + os.environ["PATH"])
    ray = os.path.join(PYBIN, "ray")
    serve = os.path.join(PYBIN, "serve")
    address = "http://127.0.0.1:%d" % dash
    try:
        subprocess.run([ray, "start", "--head", "--port", str(gcs), "--num-cpus", "1", "--dashboard-port", str(dash),
                        "--dashboard-host", "127.0.0.1", "--temp-dir", os.path.join(tmp, "ray")],
                       check=True, env=env, stdout=subprocess.DEVNULL, timeout=180)
        subprocess.run([ray, "start", "--address", "127.0.0.1:%d" % gcs, "--num-cpus", "1"],
                       check=True, env=env, stdout=subprocess.DEVNULL, timeout=180)
        # The shipped config, pointed at this build, the tiny folders and this machine's CPUs.
        config = yaml.safe_load(open(os.path.join(APP_DIR, "serve.yaml")))
        config["http_options"] = {"host": "127.0.0.1", "port": http, "request_timeout_s": 600}
        app = config["applications"][0]
        app["args"] = {"server": os.path.join(BIN, "omniflux-server"), "startup_timeout_s": 120,
                       "server_args": ["--uniworld", models + "/uniworld-v1", "--flux", models + "/flux.1-dev",
                                      "--siglip", models + "/siglip2", "--xomni", models + "/x-omni", "--serve-flux",
                                      "--threads", "1", "--max-queue", "8"]}
        dep = app["deployments"][0]
        dep["ray_actor_options"] = {"num_cpus": 1}
        dep["autoscaling_config"] = {"min_replicas": 2, "max_replicas": 2, "target_ongoing_requests": 2}
        dep["health_check_period_s"] = 1
        dep["health_check_timeout_s"] = 10
        path = os.path.join(tmp, "serve.yaml")
        yaml.safe_dump(config, open(path, "w"))
        subprocess.run([serve, "deploy", "--address", address, path], check=True, env=env,
                       stdout=subprocess.DEVNULL, timeout=120)
        base = "http://127.0.0.1:%d" % http
        deadline = time.time() + 240
        while True:
            try:
                if len(replicas(base)) == 2:
                    break
            except requests.RequestException:
                pass
            assert time.time() < deadline, "the two replicas did not come up"
            time.sleep(1)
        yield {"base": base, "models": models, "env": env, "ray": ray, "serve": serve, "address": address}
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)


def replicas(base, tries=40):
    """{replica id: server pid}, seen through the router's own routing (random per request)."""
    seen = {}
    for _ in range(tries):
        r = requests.get(base + "/omniflux/replica", timeout=30)
        if r.status_code == 200:
            d = r.json()
            seen[d["replica"]] = d["pid"]
    return seen


def generation(base, model="flux.1-dev", size="64x64", steps=2, stream=False):
    body = {"model": model, "prompt": "a red cube", "size": size, "steps": steps, "seed": 1, "stream": stream}
    return requests.post(base + "/v1/images/generations", json=body, timeout=120, stream=stream)


def edit(base):
    files = [("image[]", ("a.png", png_bytes(40, 30), "image/png")), ("image[]", ("b.png", png_bytes(30, 40, 9), "image/png"))]
    data = {"model": "uniworld-v1", "prompt": "make it snow", "size": "64x64", "steps": "2"}
    return requests.post(base + "/v1/images/edits", data=data, files=files, timeout=120)


def streamed_chat(base):
    body = {"model": "x-omni", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}
    r = requests.post(base + "/v1/chat/completions", json=body, timeout=120, stream=True)
    r.content  # the whole stream, read chunk by chunk as it came
    return r


def test_mixed_concurrent_requests_all_succeed_on_both_replicas(cluster):
    base = cluster["base"]
    jobs = [lambda: generation(base), lambda: generation(base, "uniworld-v1"), lambda: edit(base),
            lambda: streamed_chat(base)] * 4
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda f: f(), jobs))
    assert [r.status_code for r in results] == [200] * 16, [(r.status_code, r.text[:200]) for r in results]
    for r in results[:3]:
        assert base64.b64decode(r.json()["data"][0]["b64_json"])[:8] == b"\x89PNG\r\n\x1a\n"
    chat = results[3].text
    assert chat.rstrip().endswith("data: [DONE]") and '"role":"assistant"' in chat
    assert len({r.headers["X-Omniflux-Replica"] for r in results}) == 2, "one replica served everything"
    # status codes and error objects pass through unchanged
    bad = requests.post(base + "/v1/images/generations", json={"model": "dall-e-3", "prompt": "p"}, timeout=30)
    assert bad.status_code == 404 and bad.json()["error"]["param"] == "model"
    assert requests.post(base + "/v1/images/edits", data="x", timeout=30,
                         headers={"Content-Type": "text/plain"}).status_code == 415


def test_streamed_progress_arrives_as_it_happens(cluster):
    start = time.time()
    r = generation(cluster["base"], size="256x256", steps=24, stream=True)
    assert r.status_code == 200
    arrivals = []  # (seconds since start, event name)
    for line in r.iter_lines():
        if line.startswith(b"event: "):
            arrivals.append((time.time() - start, line[7:].decode()))
    progress = [t for t, e in arrivals if e == "image_generation.progress"]
    done = [t for t, e in arrivals if e == "image_generation.completed"]
    assert len(progress) >= 3 and len(done) == 1, arrivals
    # Buffered events would all arrive together at the end; here they spread over the run.
    assert done[0] - progress[0] > 0.3 * done[0], arrivals


def test_a_killed_replica_hangs_nothing_and_is_replaced(cluster):
    base = cluster["base"]
    before = replicas(base)
    assert len(before) == 2
    victim_id, victim_pid = sorted(before.items())[0]

    def one(i):
        try:
            r = generation(base, "flux.1-dev") if i % 2 else streamed_chat(base)
            return r.status_code, r.headers.get("Content-Type", ""), r.text[:300]
        except requests.RequestException as e:  # a hang ends in the 120 s timeout: the test fails
            return -1, "", repr(e)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, i) for i in range(24)]
        time.sleep(0.5)
        os.kill(victim_pid, signal.SIGKILL)
        results = [f.result(timeout=180) for f in futures]
    print("statuses while a replica was killed:", sorted(code for code, _, _ in results))
    for code, ctype, text in results:
        assert code in (200, 503), (code, text)
        if code == 503:  # retryable, and says so
            assert "replica_unavailable" in text or "unavailable" in text.lower(), text
    # Ray's health check fails the replica and starts another; then every request succeeds again.
    deadline = time.time() + 180
    while True:
        now = replicas(base, tries=20)
        if len(now) == 2 and victim_id not in now:
            break
        assert time.time() < deadline, "the killed replica was not replaced: %s" % now
        time.sleep(2)
    assert all(generation(base).status_code == 200 for _ in range(6))


def test_shutdown_leaves_no_server_process(cluster):
    assert server_pids(cluster["models"]), "no omniflux-server to shut down"
    subprocess.run([cluster["serve"], "shutdown", "-y", "--address", cluster["address"]], check=True,
                   env=cluster["env"], stdout=subprocess.DEVNULL, timeout=120)
    subprocess.run([cluster["ray"], "stop"], check=True, env=cluster["env"], stdout=subprocess.DEVNULL, timeout=120)
    deadline = time.time() + 60
    while server_pids(cluster["models"]):
        assert time.time() < deadline, "omniflux-server processes left: %s" % server_pids(cluster["models"])
        time.sleep(0.5)
