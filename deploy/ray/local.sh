#!/usr/bin/env bash
# One command for omniflux on Ray Serve on this machine: a head and a second node on loopback, and
# two omniflux replicas (one CPU each) on the tiny random-weight models, serving the OpenAI API.
#
#   deploy/ray/local.sh up      # then http://127.0.0.1:8000/v1/... (X-Omniflux-Replica names the replica)
#   deploy/ray/local.sh down    # serve shutdown, then ray stop (every Ray process of this user)
#
# Needs ./scripts/build.sh first (scripts/setup.sh installs Ray into the torch environment).
# OMNIFLUX_RAY_DIR (/tmp/omniflux-ray), OMNIFLUX_RAY_PORT (6390), OMNIFLUX_RAY_DASHBOARD_PORT (8266),
# OMNIFLUX_RAY_HTTP_PORT (8000), OMNIFLUX_RAY_HEALTH_PERIOD (10 s) and OMNIFLUX_BIN_DIR (build/bin)
# override the defaults.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=${OMNIFLUX_RAY_DIR:-/tmp/omniflux-ray}  # short: Ray's socket paths must fit 107 bytes
gcs=${OMNIFLUX_RAY_PORT:-6390}
dash=${OMNIFLUX_RAY_DASHBOARD_PORT:-8266}
http=${OMNIFLUX_RAY_HTTP_PORT:-8000}
venv=$(ls -d "${OMNIFLUX_CACHE_DIR:-$HOME/.cache/omniflux}"/torch-*/ 2>/dev/null | sort -V | tail -1)
[ -x "$venv/bin/ray" ] || { echo "local.sh: no Ray in the torch environment: run scripts/setup.sh" >&2; exit 1; }
export PATH="$venv/bin:$PATH" PYTHONPATH="$root/deploy/ray" RAY_USAGE_STATS_ENABLED=0

case "${1:-}" in
  up)
    bin=${OMNIFLUX_BIN_DIR:-$root/build/bin}
    server="$bin/omniflux-server"
    [ -x "$server" ] || { echo "local.sh: no $server: run ./scripts/build.sh" >&2; exit 1; }
    mkdir -p "$dir"
    [ -d "$dir/models/x-omni" ] ||
      "$bin/omniflux-tiny" --out "$dir/models" --seed 5 --only flux_1_dev --only uniworld_v1 \
        --only siglip2 --only x_omni --tokenizers "$root/tests/fixtures/tokenizers" >/dev/null
    ray start --head --port "$gcs" --num-cpus 1 --dashboard-port "$dash" --dashboard-host 127.0.0.1 \
      --temp-dir "$dir/ray" >/dev/null
    ray start --address "127.0.0.1:$gcs" --num-cpus 1 >/dev/null
    python "$root/deploy/ray/local_config.py" --server "$server" --models "$dir/models" --http-port "$http" \
      --health-period "${OMNIFLUX_RAY_HEALTH_PERIOD:-10}" >"$dir/serve-local.yaml"
    serve deploy --address "http://127.0.0.1:$dash" "$dir/serve-local.yaml" >/dev/null
    for _ in $(seq 240); do  # both replicas up: their servers loaded and answering
      if serve status --address "http://127.0.0.1:$dash" 2>/dev/null | grep -q "RUNNING: 2" &&
         python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$http/health', timeout=5)" 2>/dev/null; then
        echo "omniflux on Ray Serve: http://127.0.0.1:$http (2 replicas on 2 nodes); 'deploy/ray/local.sh down' stops it"
        exit 0
      fi
      sleep 1
    done
    echo "local.sh: the replicas did not come up; see $dir/ray/session_latest/logs" >&2
    exit 1 ;;
  down)
    serve shutdown -y --address "http://127.0.0.1:$dash" >/dev/null 2>&1 || true
    ray stop >/dev/null ;;
  *)
    echo "usage: deploy/ray/local.sh up|down" >&2
    exit 2 ;;
esac
