#!/usr/bin/env bash
# Installs omniflux's build dependencies from Debian 12 packages, if any are missing. Idempotent.
set -euo pipefail

packages=(build-essential cmake pkg-config libtorch-dev libopenblas0-pthread libsentencepiece-dev
          libstb-dev libgtest-dev nlohmann-json3-dev libpcre2-dev libutf8proc-dev)
if [ "${OMNIFLUX_FUZZ:-0}" = 1 ]; then packages+=(clang libclang-rt-14-dev); fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "omniflux setup: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
