"""The deployment files a user applies, checked without a container runtime or a cluster (neither
exists on the machines that run this): every YAML parses; every omniflux-server flag they pass is one
the server's --help lists, and its value one the server accepts where the value needs no model
folder; ports and probe paths agree; the Dockerfile runs the README's setup and build scripts, as a
non-root user, with omniflux-server as its entrypoint. Run by ctest as deploy.files."""
import os
import re
import subprocess

import pytest
import yaml

BIN = os.environ["OMNIFLUX_BIN_DIR"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(ROOT, "deploy")


@pytest.fixture(scope="module")
def server_flags():
    out = subprocess.run([os.path.join(BIN, "omniflux-server"), "--help"], capture_output=True, text=True,
                         timeout=60)
    flags = set(re.findall(r"(--[a-z0-9-]+)", out.stdout + out.stderr))
    assert "--max-queue" in flags and "--api-key-file" in flags, out.stdout[:400]
    return flags


def check_args(args, flags, where):
    assert args, where
    for a in args:
        if str(a).startswith("--"):
            assert a in flags, "%s passes %s, which omniflux-server does not take" % (where, a)


def containers(doc):
    spec = doc["spec"]
    if doc["kind"] == "Deployment":
        return spec["template"]["spec"]["containers"], spec["template"]["spec"]["volumes"]
    return spec["predictor"]["containers"], spec["predictor"]["volumes"]


def test_kubernetes_files(server_flags):
    docs = []
    for name in ("omniflux.yaml", "inferenceservice.yaml"):
        docs += [d for d in yaml.safe_load_all(open(os.path.join(DEPLOY, "kubernetes", name))) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["Deployment", "InferenceService", "Service"]
    for d in docs:
        if d["kind"] == "Service":
            assert d["spec"]["selector"] == {"app": "omniflux"}
            continue
        (c,), volumes = containers(d)
        check_args(c["args"], server_flags, d["kind"])
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
        port = c["ports"][0]["containerPort"]
        assert port == 8080  # the Dockerfile's --port
        for probe in ("readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"]["path"] == "/health", (d["kind"], probe)
        # the key file the server reads lies in the Secret's mount; the models are mounted read-only
        key = c["args"][c["args"].index("--api-key-file") + 1]
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        assert key.startswith(mounts["key"]["mountPath"] + "/") and mounts["key"]["readOnly"]
        assert mounts["models"]["readOnly"] and all(
            str(a).startswith("/models/") for a in c["args"] if str(a).startswith("/") and a != key)
        assert {v["name"]: v for v in volumes}["key"]["secret"]["secretName"] == "omniflux-key"
        if d["kind"] == "Deployment":
            assert d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 60
            assert d["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_ray_config(server_flags):
    config = yaml.safe_load(open(os.path.join(DEPLOY, "ray", "serve.yaml")))
    (app,) = config["applications"]
    assert app["import_path"] == "omniflux_serve:build"
    check_args(app["args"]["server_args"], server_flags, "serve.yaml")
    assert "--port" not in app["args"]["server_args"] and "--host" not in app["args"]["server_args"]
    (dep,) = app["deployments"]
    assert dep["ray_actor_options"]["num_gpus"] == 1
    queue = int(app["args"]["server_args"][app["args"]["server_args"].index("--max-queue") + 1])
    assert dep["max_ongoing_requests"] == queue + 1


def test_dockerfile(server_flags):
    text = open(os.path.join(DEPLOY, "docker", "Dockerfile")).read()
    runs = " ".join(re.findall(r"^RUN (.*(?:\\\n.*)*)", text, re.M))
    assert "./scripts/setup.sh" in runs and "./scripts/build.sh" in runs, "not the README's set-up and build"
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    (entry,) = re.findall(r"^ENTRYPOINT (\[.*\])", text, re.M)
    entry = yaml.safe_load(entry)
    assert entry[0] == "omniflux-server"
    check_args(entry[1:], server_flags, "Dockerfile ENTRYPOINT")
    assert entry[entry.index("--port") + 1] == "8080" and "EXPOSE 8080" in text
    # the README's commands are the scripts the image runs
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert "./scripts/test.sh" in readme and "./scripts/demo.sh" in readme
