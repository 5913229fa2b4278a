#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need, then runs
# formatting, lints, every test (CPU, and WGSL on whatever Vulkan adapter exists: Mesa's
# lavapipe on a machine without a GPU), and builds the CUDA backend and the benches.
set -euo pipefail
cd "$(dirname "$0")/.."

have_vulkan_icd() { ls /usr/share/vulkan/icd.d/*.json >/dev/null 2>&1 || ls /etc/vulkan/icd.d/*.json >/dev/null 2>&1; }
if ! have_vulkan_icd || ! ldconfig -p | grep -q libvulkan.so.1; then
  echo "== installing Vulkan loader and Mesa's software Vulkan (lavapipe) for the WGSL tests"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
fi
if ! ls /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf >/dev/null 2>&1; then
  echo "== installing a TrueType font for the bench plot test"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq fonts-dejavu-core >/dev/null
fi
# The WGSL tests must run on a real adapter here: fail, never skip, if none opens.
export MINFERENCE_REQUIRE_WGPU=1
# Both portable attention variants must open on it (lavapipe: 32 KiB of workgroup memory).
export MINFERENCE_REQUIRE_WGPU_VARIANTS=rowwise,tiled
# NVRTC (no GPU needed) so that every CUDA kernel family is compiled for sm_80 and sm_90 here:
# NVIDIA's pip wheel of the runtime compiler, unpacked into target/ (git-ignored).
if ! ldconfig -p | grep -q libnvrtc.so; then
  nvrtc=target/nvrtc/nvidia/cuda_nvrtc/lib
  if [ ! -e "$nvrtc/libnvrtc.so" ]; then
    echo "== fetching NVRTC (nvidia-cuda-nvrtc-cu12 wheel) for the CUDA compile check"
    mkdir -p target/nvrtc
    if python3 -m pip download --quiet --no-deps nvidia-cuda-nvrtc-cu12==12.9.86 -d target/nvrtc \
        && python3 -m zipfile -e target/nvrtc/nvidia_cuda_nvrtc_cu12-*.whl target/nvrtc; then
      ln -sf libnvrtc.so.12 "$nvrtc/libnvrtc.so"
    else
      echo "!! could not fetch NVRTC: the CUDA compile check will say SKIPPED"
    fi
  fi
  if [ -e "$nvrtc/libnvrtc.so" ]; then
    export LD_LIBRARY_PATH="$PWD/$nvrtc${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export MINFERENCE_REQUIRE_NVRTC=1
  fi
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (default features, and with cuda)"
cargo clippy --all-targets -- -D warnings
cargo clippy --all-targets --features cuda -- -D warnings
echo "== cargo bench --no-run"
cargo bench --no-run --features cuda
echo "== cargo test (release: the float64 reference is slow unoptimised)"
cargo test --release --features cuda
