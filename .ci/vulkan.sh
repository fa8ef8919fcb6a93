#!/usr/bin/env bash
# Makes sure a Vulkan device exists for the burn-wgpu tests: Mesa's software
# rasterizer (lavapipe) from Debian's packages, which runs compute shaders on the
# CPU. The CubeCL kernels that burn-cuda compiles for NVIDIA GPUs compile to
# SPIR-V/WGSL for it, so their results are tested on every CI run.
set -euo pipefail
icd=/usr/share/vulkan/icd.d/lvp_icd.x86_64.json
if [ -f "$icd" ] && ldconfig -p | grep -q 'libvulkan\.so\.1'; then
    echo "Vulkan: lavapipe present"
    exit 0
fi
pkgs=(mesa-vulkan-drivers libvulkan1)
as_root=()
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "error: installing ${pkgs[*]} needs root or sudo" >&2; exit 1; }
    as_root=(sudo -n)
fi
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null \
    || { "${as_root[@]}" apt-get update -q >/dev/null && "${as_root[@]}" apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null; }
[ -f "$icd" ] || { echo "error: $icd missing after installing ${pkgs[*]}" >&2; exit 1; }
echo "Vulkan: installed lavapipe (${pkgs[*]})"
