#!/usr/bin/env bash
# Installs what omniflux needs to build and test, if missing. Idempotent.
#  - Debian 12 packages (compiler, CMake, the libraries below, the browser for the web-page test).
#  - LibTorch: PyPI's torch wheel (CUDA 13 build; it runs on the CPU too), pinned, in a virtual
#    environment outside the checkout that every clone on the machine shares:
#    ${OMNIFLUX_CACHE_DIR:-~/.cache/omniflux}/torch-<version>. CMake looks there by itself.
set -euo pipefail

torch_version=2.11.0   # keep in step with OMNIFLUX_TORCH_PIN in cmake/OmnifluxTorch.cmake and python/pyproject.toml
# Python packages, in the same environment: the OpenAI conformance suite drives the server with the
# official client library; prometheus-client parses GET /metrics; Ray Serve runs deploy/ray on a
# local two-node cluster (tests/deploy); the Python package (python/, docs/python.md) takes and
# returns PIL images and numpy arrays, shows tqdm bars, and builds with scikit-build-core.
python_test_packages=(openai==3.63.0 pytest==9.2.0 prometheus-client==0.26.0 "ray[serve]==2.60.0"
                      numpy==2.4.6 pillow==13.0.0 tqdm==4.70.1 scikit-build-core==1.1.2)

# Image decoding uses libpng, libjpeg-turbo and libwebp (fuzzed upstream); stb only writes PNGs.
# clang and its runtime (libFuzzer, ASan, UBSan) are for scripts/fuzz.sh and the `fuzz` ctest.
# libgloo-dev: the headers c10d's Gloo backend includes (omniflux::Parallel on the CPU, docs/distributed.md).
# python3-dev: the Python package's module (python/) compiles against the environment's Python headers.
packages=(build-essential cmake pkg-config python3 python3-venv python3-dev libsentencepiece-dev libstb-dev
          libgtest-dev nlohmann-json3-dev libpcre2-dev libutf8proc-dev libcpp-httplib-dev
          libpng-dev libjpeg62-turbo-dev libwebp-dev libgloo-dev clang libclang-rt-14-dev
          chromium chromium-driver python3-selenium)

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "omniflux setup: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cache="${OMNIFLUX_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/omniflux}"
venv="$cache/torch-$torch_version"
if [ ! -f "$venv/.complete" ]; then
  mkdir -p "$cache"
  # One installer at a time per machine; the others wait, then find it done.
  exec 9>"$cache/.torch-$torch_version.lock"
  flock 9
  if [ ! -f "$venv/.complete" ]; then
    echo "omniflux setup: installing torch $torch_version from PyPI into $venv (about 3 GB)" >&2
    rm -rf "$venv.partial"
    python3 -m venv "$venv.partial"
    "$venv.partial/bin/python" -m pip install -q --no-cache-dir --disable-pip-version-check "torch==$torch_version"
    rm -rf "$venv"
    mv "$venv.partial" "$venv"   # bin/python finds its environment from pyvenv.cfg beside it
    touch "$venv/.complete"
  fi
  exec 9>&-
fi

# The pinned Python packages, installed into the torch environment when one is missing or at
# another version.
missing_py=()
for spec in "${python_test_packages[@]}"; do
  name=${spec%%==*}
  name=${name%%\[*}  # the distribution, without its extras
  have=$("$venv/bin/python" -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null || true)
  [ "$have" = "${spec##*==}" ] || missing_py+=("$spec")
done
if [ ${#missing_py[@]} -gt 0 ]; then
  exec 9>"$cache/.torch-$torch_version.lock"
  flock 9
  echo "omniflux setup: installing ${missing_py[*]} into $venv" >&2
  "$venv/bin/python" -m pip install -q --no-cache-dir --disable-pip-version-check "${missing_py[@]}"
  exec 9>&-
fi
