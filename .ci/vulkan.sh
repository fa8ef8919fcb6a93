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
. "$(dirname "$0")/apt.sh"
apt_install "${pkgs[@]}"
[ -f "$icd" ] || { echo "error: $icd missing after installing ${pkgs[*]}" >&2; exit 1; }
echo "Vulkan: installed lavapipe (${pkgs[*]})"
