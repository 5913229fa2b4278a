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

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (default features, and with cuda)"
cargo clippy --all-targets -- -D warnings
cargo clippy --all-targets --features cuda -- -D warnings
echo "== cargo bench --no-run"
cargo bench --no-run --features cuda
echo "== cargo test (release: the float64 reference is slow unoptimised)"
cargo test --release --features cuda
