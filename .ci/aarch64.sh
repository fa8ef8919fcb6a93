#!/usr/bin/env bash
# bioalign-quant's NEON kernels on AArch64, without an ARM machine: the crate is
# cross-compiled for aarch64-unknown-linux-gnu (Rust's target through rustup, the
# linker and C library from Debian's cross packages) and its tests run under
# qemu's user-mode emulator. Emulation checks results, not speed.
#
#   bash .ci/aarch64.sh        # clippy -D warnings, then the tests
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu
rustup target add "$target" >/dev/null
if ! command -v qemu-aarch64 >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null; then
    pkgs=(qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
    . .ci/apt.sh
    apt_install "${pkgs[@]}"
    echo "aarch64: installed ${pkgs[*]}"
fi
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
cargo clippy -p bioalign-quant --target "$target" --all-targets -- -D warnings
cargo test -p bioalign-quant --target "$target"
