"""The Ray Serve application of deploy/ray on a real local cluster, started by the one command
`deploy/ray/local.sh up`: a head and a second node on loopback (`ray start`), deploy/ray/serve.yaml
(through local_config.py) deployed with `serve deploy` on the tiny models, two replicas (one per
node, num_cpus 1 each). Checks: 16 concurrent mixed requests (generations, a
2-image edit, streamed chats) all succeed and both replicas serve some; a streamed generation's
progress events arrive as they are made; killing one replica's omniflux-server during load hangs
no request (each succeeds or gets a retryable 503) and Ray replaces the replica; `serve shutdown`
and `ray stop` leave no omniflux-server behind. Run by ctest as deploy.ray (label ray)."""
import base64
import concurrent.futures
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
    # The one command of docs/beyond-one-machine.md, on free ports and a health check every second.
    tmp = tempfile.mkdtemp(prefix="ofray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    http = free_port()
    env = dict(os.environ, OMNIFLUX_RAY_DIR=tmp, OMNIFLUX_RAY_PORT=str(free_port()),
               OMNIFLUX_RAY_DASHBOARD_PORT=str(free_port()), OMNIFLUX_RAY_HTTP_PORT=str(http),
               OMNIFLUX_RAY_HEALTH_PERIOD="1")
    local = os.path.join(APP_DIR, "local.sh")
    try:
        up = subprocess.run([local, "up"], env=env, capture_output=True, text=True, timeout=400)
        assert up.returncode == 0, up.stdout + up.stderr
        base = "http://127.0.0.1:%d" % http
        assert len(replicas(base)) == 2
        yield {"base": base, "models": os.path.join(tmp, "models"), "env": env, "local": local}
    finally:
        subprocess.run([local, "down"], env=env, capture_output=True, timeout=180)
        subprocess.run([os.path.join(PYBIN, "ray"), "stop", "--force"], capture_output=True, timeout=120)
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
    # local.sh down: serve shutdown, then ray stop
    subprocess.run([cluster["local"], "down"], check=True, env=cluster["env"], capture_output=True, timeout=180)
    deadline = time.time() + 60
    while server_pids(cluster["models"]):
        assert time.time() < deadline, "omniflux-server processes left: %s" % server_pids(cluster["models"])
        time.sleep(0.5)
