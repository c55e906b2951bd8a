#!/usr/bin/env bash
# Installs everything effnet-dist needs on a fresh Debian 12 machine, then configures and builds.
# Idempotent: a second run skips what is already there and only rebuilds what changed.
# Sources: Debian's packages and PyPI only.
#   scripts/setup.sh            install + build (Release, build/)
#   SETUP_SKIP_BUILD=1 scripts/setup.sh   install only
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

apt_packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libhdf5-dev hdf5-tools
  libopenmpi-dev openmpi-bin
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libspdlog-dev libfmt-dev
  libopencv-imgcodecs-dev libopencv-imgproc-dev
  libyaml-cpp-dev libcli11-dev nlohmann-json3-dev
  libssl-dev
  libgtest-dev libgmock-dev
  libpng-dev
  python3-venv
  chromium
)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[setup] installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Python venv: LibTorch comes from the torch wheel (pinned to the GPU machine's version);
# timm/numpy/h5py/safetensors/keras are used by parity tests and benchmarks; yamllint and
# kubernetes-validate check the k8s manifests; tensorboard's own reader checks our event files.
# (Debian's chromium, above, renders report.html in tests/report/check_run_report.py.)
venv="$root/.venv"
py_requirements="$root/scripts/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$py_requirements" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv"
  python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing Python packages (torch is large: a few minutes the first time)"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -r "$py_requirements"
  echo "$want" >"$stamp"
fi

[ "${SETUP_SKIP_BUILD:-0}" = 1 ] && exit 0

torch_prefix="$("$venv/bin/python" -c 'import torch;print(torch.utils.cmake_prefix_path)')"
build_dir="${BUILD_DIR:-$root/build}"
# ccache keys on paths relative to the checkout, so clean clones in other folders reuse the cache.
export CCACHE_BASEDIR="$root"
if [ ! -f "$build_dir/build.ninja" ]; then
  cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$torch_prefix" -DPython3_EXECUTABLE="$venv/bin/python"
fi
cmake --build "$build_dir" -j "$(nproc)"
