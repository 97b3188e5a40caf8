#!/usr/bin/env bash
# Prepares a benchmark run on a GPU machine that has python3, torch and a GPU driver but no
# Rust toolchain and possibly no Vulkan loader: builds the release binary, downloads the
# Vulkan loader packages (Debian 12, amd64) into .gl/, copies the binary and the run scripts
# into .device/ (both folders are git-ignored), and prints the command to run there.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin wgpu-optim --example cpu_adamw
cargo build --release -p wgpu-optim-cli --example f16_storage --example muon_step
mkdir -p .gl .device /tmp/amd64-lists/partial
if ! ls .gl/libvulkan1_*.deb >/dev/null 2>&1; then
    apt_opts=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64-lists)
    apt-get "${apt_opts[@]}" update >/dev/null
    (cd .gl && apt-get "${apt_opts[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi
cp target/release/wgpu-optim target/release/examples/cpu_adamw target/release/examples/f16_storage target/release/examples/muon_step scripts/gpu-run.sh scripts/torch_gpu_bench.py \
    scripts/cpu_adamw_bench.py .device/
echo "Copy the repository (with .gl/ and .device/) to the GPU machine and run from its root:"
echo "    bash .device/gpu-run.sh"
