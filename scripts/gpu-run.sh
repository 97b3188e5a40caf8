#!/usr/bin/env bash
# Runs `wgpu-optim bench` and torch's AdamW side by side on a machine with a GPU driver and
# python3 + torch, but no cargo and possibly no Vulkan loader. scripts/prepare-gpu-run.sh
# puts it, the release binary and the loader packages into .device/ and .gl/; run it from the
# repository root. Results go to $OUT (default bench-out/).
# Environment: SETS (default one,gpt2,gpt2-xl), SIZES (log2 sizes of `one`, default 20,24,28),
# MAX_GIB (default 64), TORCH (set to 0 to skip torch), TUNE (set to 0 to skip `wgpu-optim tune`,
# whose fastest tuning is saved to $OUT/tuning.json for the adapter table in src/tuning.rs),
# PRECISION (set to 0 to skip the mixed-precision modes at 2^26, $OUT/precision.txt, and the
# native-f16 storage measurement, $OUT/f16-storage.txt), MUON (set to 0 to skip Muon's step on
# GPT-2's shapes, $OUT/muon.txt).
set -euo pipefail
out=${OUT:-bench-out}
mkdir -p "$out"
if ! ldconfig -p | grep -q 'libvulkan.so.1 '; then
    # The Vulkan loader and GL dispatch libraries, unpacked over / (needs root).
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
if [ -z "${VK_DRIVER_FILES:-}" ]; then
    for f in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json \
        /etc/vulkan/icd.d/nvidia_icd.json; do
        if [ -f "$f" ]; then export VK_DRIVER_FILES=$f; break; fi
    done
fi
bin=.device/wgpu-optim
$bin info | tee "$out/info.txt"
$bin bench --set "${SETS:-one,gpt2,gpt2-xl}" --log2-sizes "${SIZES:-20,24,28}" --max-gib "${MAX_GIB:-64}" \
    --no-sequential --markdown --json "$out/wgpu-optim.json" | tee "$out/wgpu-optim.txt"
if [ "${PRECISION:-1}" != 0 ]; then
    $bin bench --log2-sizes 26 --precision f32,bf16,bf16-master,bf16-sr,bf16-moments,bf16-sr-bf16-moments,f32-8bit,bf16-sr-8bit \
        --no-sequential --markdown --json "$out/precision.json" | tee "$out/precision.txt"
    # Native f16 storage (SHADER_F16) against the crate's packed words, same run.
    .device/f16_storage 26 | tee "$out/f16-storage.txt" || true
fi
if [ "${TORCH:-1}" != 0 ]; then
    python3 .device/torch_gpu_bench.py | tee "$out/torch-gpu.txt"
fi
if [ "${MUON:-1}" != 0 ]; then
    # Muon's step on GPT-2's matrix shapes, GPU against the CPU reference, interleaved.
    .device/muon_step | tee "$out/muon.txt" || true
fi
if [ "${TUNE:-1}" != 0 ]; then
    $bin tune --log2-size 26 --save "$out/tuning.json" | tee "$out/tune.txt"
fi
