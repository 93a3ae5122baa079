#!/usr/bin/env bash
# Installs the Debian 12 packages fusionlm builds and tests with. Idempotent and non-interactive.
set -euo pipefail
pkgs=(build-essential cmake libeigen3-dev nlohmann-json3-dev libstb-dev libgtest-dev libbenchmark-dev libjpeg62-turbo-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
