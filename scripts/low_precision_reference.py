"""The bits torch stores f32 values as in bfloat16 and float16 (`.to(dtype)` on the CPU),
for tests/formats.rs: edge cases (ties at every rounding position, the largest finite
values and what overflows, subnormals, zeros, infinities, NaNs of both signs) and values
from a fixed pseudo-random sequence over all f32 bit patterns.

    python3 scripts/low_precision_reference.py > /tmp/values.rs
"""
import struct

import torch

edges = [
    0x00000000, 0x80000000, 0x3F800000, 0xBF800000,  # ±0, ±1
    0x3F808000, 0x3F818000, 0x3F80FFFF, 0x3F807FFF,  # bf16 ties (even, odd) and neighbours
    0x3F801000, 0x3F803000, 0x3F800FFF, 0x3F801001,  # f16 ties and neighbours
    0x7F7FFFFF, 0xFF7FFFFF, 0x7F7F8000, 0x7F7F7FFF,  # bf16: largest finite, what rounds to inf
    0x477FE000, 0x477FEFFF, 0x477FF000, 0x477FF001, 0xC77FF000,  # f16: 65504, overflow threshold
    0x38800000, 0x387FFFFF, 0x387FF000, 0x33800000, 0x33000000, 0x33000001, 0x32FFFFFF,  # f16 subnormals
    0x33C00000, 0x34200000, 0x00000001, 0x807FFFFF,  # f16 subnormal ties; f32 subnormals
    0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001, 0xFFBFFFFF,  # inf, NaNs
]
state = 0x2545F491
rand = []
for _ in range(256):
    state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
    rand.append(state >> 32)

print("// (f32 bits, torch bf16 bits, torch f16 bits): scripts/low_precision_reference.py,")
print(f"// torch {torch.__version__}.")
print("const TORCH_16BIT: &[(u32, u16, u16)] = &[")
for bits in edges + rand:
    x = torch.tensor([struct.unpack("<f", struct.pack("<I", bits))[0]], dtype=torch.float32)
    b = x.to(torch.bfloat16).view(torch.int16).item() & 0xFFFF
    h = x.to(torch.float16).view(torch.int16).item() & 0xFFFF
    print(f"    (0x{bits:08x}, 0x{b:04x}, 0x{h:04x}),")
print("];")
