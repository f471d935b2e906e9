#!/usr/bin/env bash
# Installs what ssmtune's build and tests need on a Debian machine, skipping packages already present.
# CPU build: cmake, g++, ninja, Eigen, nlohmann/json, doctest, zlib. CUDA is optional and never installed here:
# if nvcc is on the machine (/usr/local/cuda/bin or PATH), the build uses it.
set -euo pipefail
packages=(cmake g++ ninja-build libeigen3-dev nlohmann-json3-dev doctest-dev zlib1g-dev)
# --fuzz: also clang (libFuzzer) and its OpenMP runtime, for tools/setup/fuzz.sh
[ "${1:-}" = "--fuzz" ] && packages+=(clang libomp-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
