"""omniflux-server replicas behind Ray Serve (docs/beyond-one-machine.md).

Each replica starts one `omniflux-server` process on a loopback port and supervises it: the
process holds the replica's GPU (Ray gives the actor `num_gpus: 1` and CUDA_VISIBLE_DEVICES), and
the replica forwards every request to it unchanged: JSON, multipart edits, server-sent event
streams (chunk by chunk, as they are produced), status codes and OpenAI error objects. A process
rather than the library in-process: the server already is the tested API (limits, queue,
cancellation on disconnect, admission by plan), a crash in native code takes down only the
process, which the health check then reports, and the same binary runs with or without Ray.

Replica health is the process being alive and its GET /health answering 200; Ray replaces a
replica whose check fails. Each response names its replica in `X-Omniflux-Replica`. A request
that finds the process gone gets 503 `replica_unavailable` with Retry-After (retryable).

Deploy with `serve deploy deploy/ray/serve.yaml` (see that file), or from Python with `build(args)`.
"""
import ctypes
import json
import os
import re
import signal
import subprocess
import threading
import urllib.request

import aiohttp
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve

# Hop-by-hop headers (RFC 9110 7.6.1) and those the forwarding layer recomputes.
_DROP_REQUEST = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                 "transfer-encoding", "upgrade", "content-length"}
_DROP_RESPONSE = _DROP_REQUEST | {"content-encoding", "date", "server"}

# Connections from a replica to its server: more than max_ongoing_requests ever needs.
_POOL = 64

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


def _die_with_parent():
    # The server process gets SIGTERM when its replica process dies, however it dies: no orphan
    # keeps a GPU after `ray stop` or a killed actor.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _unavailable(why):
    body = {"error": {"message": "this replica's omniflux-server is not answering (" + why + "); retry",
                      "type": "server_error", "param": None, "code": "replica_unavailable"}}
    return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})


@serve.deployment(name="omniflux", health_check_period_s=10, health_check_timeout_s=30,
                  graceful_shutdown_timeout_s=60)
@serve.ingress(app)
class OmnifluxReplica:
    def __init__(self, server, server_args, startup_timeout_s=900):
        self.replica = serve.get_replica_context().replica_id.unique_id
        # Every connection to the server comes from this replica, so its per-address limit (meant
        # for clients on the network; Ray's proxy faces those here) must allow the replica's pool.
        cmd = [server, *map(str, server_args), "--host", "127.0.0.1", "--port", "0",
               "--max-connections-per-ip", str(_POOL + 4)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True,
                                     preexec_fn=_die_with_parent)
        # The server prints its address once the models are loaded (minutes for real checkpoints).
        line = [None]
        reader = threading.Thread(target=lambda: line.__setitem__(0, self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(startup_timeout_s)
        m = re.search(r"listening on (http://[^\s]+)", line[0] or "")
        if not m:
            self.proc.kill()
            raise RuntimeError("omniflux-server did not start (exit %s): %r" % (self.proc.poll(), line[0]))
        self.base = m.group(1)
        self.session = None

    def _session(self):
        if self.session is None:
            # No total timeout: a generation may take minutes; the server bounds its own waits.
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                                                 connector=aiohttp.TCPConnector(limit=_POOL), auto_decompress=False)
        return self.session

    def check_health(self):
        code = self.proc.poll()
        if code is not None:
            raise RuntimeError("omniflux-server exited with status %s" % code)
        with urllib.request.urlopen(self.base + "/health", timeout=10) as r:
            if r.status != 200:
                raise RuntimeError("omniflux-server /health answered %d" % r.status)

    @app.get("/omniflux/replica")
    def describe(self):
        """Which replica answers and its server's pid (for operators and the tests)."""
        return {"replica": self.replica, "pid": self.proc.pid, "server": self.base}

    @app.api_route("/{path:path}", methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
    async def forward(self, request: Request, path: str):
        if self.proc.poll() is not None:
            return _unavailable("exited with status %s" % self.proc.returncode)
        url = self.base + "/" + path + (("?" + request.url.query) if request.url.query else "")
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST]
        body = await request.body()
        try:
            upstream = await self._session().request(request.method, url, headers=headers, data=body,
                                                     allow_redirects=False)
        except aiohttp.ClientError as e:
            return _unavailable(type(e).__name__)
        out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _DROP_RESPONSE}
        out_headers["X-Omniflux-Replica"] = self.replica
        if not upstream.headers.get("Content-Type", "").startswith("text/event-stream"):
            try:
                content = await upstream.read()
            except aiohttp.ClientError as e:
                return _unavailable(type(e).__name__)
            finally:
                upstream.release()
            return Response(content, status_code=upstream.status, headers=out_headers)

        async def events():
            # Chunks as they arrive; a client that leaves cancels this generator, which closes the
            # upstream connection, which the server takes as a disconnect and cancels the job.
            try:
                async for chunk in upstream.content.iter_any():
                    yield chunk
            except aiohttp.ClientError:
                err = {"error": {"message": "the replica's omniflux-server went away mid-stream; retry",
                                 "type": "server_error", "param": None, "code": "replica_unavailable"}}
                yield ("data: " + json.dumps(err) + "\n\ndata: [DONE]\n\n").encode()
            finally:
                upstream.close()

        return StreamingResponse(events(), status_code=upstream.status, headers=out_headers)

    def __del__(self):
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            proc.terminate()  # the server cancels its running request and exits 0
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def build(args):
    """Application builder for `serve deploy`: args {"server": path, "server_args": [...]}."""
    server = os.path.expanduser(args.get("server", "omniflux-server"))
    return OmnifluxReplica.bind(server, list(args.get("server_args", [])),
                                int(args.get("startup_timeout_s", 900)))
