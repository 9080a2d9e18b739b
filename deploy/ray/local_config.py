"""Writes a local variant of deploy/ray/serve.yaml: this build's omniflux-server, the tiny model
folders, one CPU per replica and exactly 2 replicas (deploy/ray/local.sh, tests/deploy).

  python deploy/ray/local_config.py --server build/bin/omniflux-server --models DIR --http-port 8000 \
      [--health-period 10] > serve-local.yaml"""
import argparse
import os
import sys

import yaml


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--server", required=True)
    p.add_argument("--models", required=True, help="omniflux-tiny's output folder")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--health-period", type=float, default=10)
    a = p.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    config = yaml.safe_load(open(os.path.join(here, "serve.yaml")))
    config["http_options"] = {"host": "127.0.0.1", "port": a.http_port, "request_timeout_s": 600}
    (app,) = config["applications"]
    m = os.path.abspath(a.models)
    app["args"] = {"server": os.path.abspath(a.server), "startup_timeout_s": 120,
                   "server_args": ["--uniworld", m + "/uniworld-v1", "--flux", m + "/flux.1-dev", "--siglip",
                                   m + "/siglip2", "--xomni", m + "/x-omni", "--serve-flux", "--threads", "1",
                                   "--max-queue", "8"]}
    (dep,) = app["deployments"]
    dep["ray_actor_options"] = {"num_cpus": 1}
    dep["autoscaling_config"] = {"min_replicas": a.replicas, "max_replicas": a.replicas, "target_ongoing_requests": 2}
    dep["health_check_period_s"] = a.health_period
    dep["health_check_timeout_s"] = 10
    yaml.safe_dump(config, sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()
