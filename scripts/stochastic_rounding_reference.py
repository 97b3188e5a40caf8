"""Reference values of stochastic rounding for tests/mixed_precision.rs, computed apart from
the crate: the counter-based random bits (pcg4d, Jarzynski and Olano, "Hash Functions for GPU
Rendering", JCGT 9(3) 2020, written here from the paper in 32-bit integer arithmetic) keyed as
`precision::random_bits` documents, and torchao's bf16 stochastic rounding rule
(`torchao.optim.quant_utils._fp32_to_bf16_sr`: truncate to the top 16 bits, add one where the
random 16 bits are below the dropped half) applied with torch to those bits.

    python3 scripts/stochastic_rounding_reference.py > /tmp/values.rs
"""
import struct

import torch

M = 0xFFFFFFFF
GOLDEN = 0x9E3779B9


def pcg4d(v):
    v = [(x * 1664525 + 1013904223) & M for x in v]

    def mix(v):
        x, y, z, w = v
        x = (x + y * w) & M
        y = (y + z * x) & M
        z = (z + x * y) & M
        w = (w + y * z) & M
        return [x, y, z, w]

    v = mix(v)
    v = [x ^ (x >> 16) for x in v]
    return mix(v)


def random_bits(seed, step, index):
    key = [index & M, step & M, seed & M, ((seed >> 32) ^ (((index >> 32) * GOLDEN) & M)) & M]
    return pcg4d(key)[0] >> 16


def torchao_sr(bits, rand16):
    # torchao's _fp32_to_bf16_sr with the random integers given instead of torch.randint.
    x = torch.tensor([bits], dtype=torch.int64).to(torch.int32)
    r = torch.tensor([rand16], dtype=torch.int32)
    fraction = x & 0xFFFF
    toward_zero = x & -65536  # 0xFFFF0000 as int32
    out = torch.where(r < fraction, toward_zero + 0x10000, toward_zero)
    return out.view(torch.float32).bfloat16().view(torch.int16).item() & 0xFFFF


keys = [(0, 1, 0), (0, 1, 1), (1, 1, 0), (0, 2, 0), (0x123456789ABCDEF0, 7, 12345),
        (42, 1000, 2**32 - 1), (42, 1000, 2**32), (42, 1000, 2**34 + 5), (2**64 - 1, 2**32 - 1, 2**40 - 1)]
state = 0x9E3779B97F4A7C15
for _ in range(23):
    state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
    keys.append((state, (state >> 40) & 0xFFFF, (state >> 8) & 0xFFFFFFFFF))

print("// (seed, step, index, random bits): scripts/stochastic_rounding_reference.py (pcg4d from the paper).")
print("const RANDOM_BITS: &[(u64, u32, u64, u16)] = &[")
for seed, step, index in keys:
    print(f"    (0x{seed:016x}, {step}, {index}, 0x{random_bits(seed, step, index):04x}),")
print("];")

# Finite values with every kind of dropped half (0, 1, a tie, 0xffff), carries into the
# exponent and past the largest finite value, negatives, subnormals, infinities.
values = [0x3F800000, 0x3F800001, 0x3F808000, 0x3F80FFFF, 0x3FFFFFFF, 0x7F7FFFFF, 0xFF7F0001,
          0xBF812345, 0x00000001, 0x807FFFFF, 0x7F800000, 0xFF800000, 0x00000000, 0x80000000]
rands = [0x0000, 0x0001, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF]
print(f"// (f32 bits, random bits, bf16 bits): torchao's rule in torch {torch.__version__}.")
print("const TORCHAO_SR: &[(u32, u16, u16)] = &[")
for bits in values:
    for r in rands:
        print(f"    (0x{bits:08x}, 0x{r:04x}, 0x{torchao_sr(bits, r):04x}),")
print("];")
