"""Reference values of 8-bit blockwise quantization for tests/quantization.rs.

The dynamic quantization maps are bitsandbytes' `create_dynamic_map` (signed for first
moments, unsigned for second), computed here as torchao.optim.quant_utils computes them (torch
float32 linspace, products in float32, sorted). Quantization follows the paper (Dettmers et
al., "8-bit Optimizers via Block-wise Quantization", 2022, eq. 4: the code whose value times
the block's absmax is nearest), in the form this crate computes on every device with
correctly rounded operations only: a binary search for the largest code `c` with
`x >= qmap[c] * absmax`, then `c + 1` where `x - qmap[c] * absmax >= (qmap[c + 1] * absmax -
qmap[c] * absmax) * 0.5` — all float32. torchao's `quantize_8bit_with_qmap` divides first
(`x / absmax` against the map); the two agree but where the quotient's rounding crosses a
midpoint, which this script counts.

    python3 scripts/quantization_reference.py > /tmp/values.rs
"""
import struct

import numpy as np
import torch


def create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
    data = []
    non_sign_bits = total_bits - 1
    additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1
    for i in range(max_exponent_bits):
        fraction_items = int(2 ** (i + non_sign_bits - max_exponent_bits) + 1 if signed
                             else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1)
        boundaries = torch.linspace(0.1, 1, fraction_items)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        if signed:
            data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    assert additional_items == 0
    data.append(0)
    data.append(1.0)
    assert len(data) == 2 ** total_bits
    data.sort()
    return torch.tensor(data, dtype=torch.float32)


def f32(x):
    return np.float32(x)


def quantize(x, qmap, absmax):
    """This crate's rule for one float32 value (see the module doc)."""
    q = [f32(v) * absmax for v in qmap]
    c = 0
    for step in (128, 64, 32, 16, 8, 4, 2, 1):
        if x >= q[c + step] if c + step < 256 else False:
            c += step
    up = min(c + 1, 255)
    if f32(x - q[c]) >= f32(f32(q[up] - q[c]) * f32(0.5)):
        c = up
    return c


def torchao_quantize(x_scaled, qmap):
    codes = torch.where(x_scaled >= qmap[128], 128, 0)
    for step in (64, 32, 16, 8, 4, 2, 1):
        codes += torch.where(x_scaled >= qmap[codes + step], step, 0)
    up = (codes + 1).clip(max=255)
    down_v, up_v = qmap[codes], qmap[up]
    return torch.where(x_scaled - down_v >= (up_v - down_v) * 0.5, up, codes)


def bits(x):
    return struct.unpack("<I", struct.pack("<f", float(x)))[0]


signed, unsigned = create_dynamic_map(True), create_dynamic_map(False)
for name, m in (("QMAP_SIGNED", signed), ("QMAP_UNSIGNED", unsigned)):
    print(f"/// bitsandbytes' create_dynamic_map(signed={name == 'QMAP_SIGNED'}) as f32 bits")
    print(f"/// (scripts/quantization_reference.py, torch {torch.__version__}).")
    print(f"const {name}_BITS: [u32; 256] = [")
    for i in range(0, 256, 8):
        print("    " + " ".join(f"0x{bits(v):08x}," for v in m[i:i + 8].tolist()))
    print("];")

# Blocks of values: random normals at several scales (a block's absmax from them), the map's
# own points and midpoints times an absmax, zeros, and a block of one value.
rng = np.random.default_rng(7)
cases = []
for scale in (1e-8, 1e-3, 1.0, 37.5):
    cases.append(("normal", (rng.standard_normal(64) * scale).astype(np.float32)))
    cases.append(("square", ((rng.standard_normal(64) * scale) ** 2).astype(np.float32)))
pts = signed.numpy()
mids = ((pts[:-1] + pts[1:]) * np.float32(0.5)).astype(np.float32)
cases.append(("points", (pts[::4] * np.float32(0.75)).astype(np.float32)))
cases.append(("midpoints", (mids[::4] * np.float32(3.0)).astype(np.float32)))
cases.append(("zeros", np.zeros(16, dtype=np.float32)))
cases.append(("one", np.full(8, 2.5, dtype=np.float32)))

print("// (signed, absmax bits, [(value bits, code)]): blocks quantized by the rule above.")
print("const BLOCKS: &[(bool, u32, &[(u32, u8)])] = &[")
differ = total = 0
for name, block in cases:
    for is_signed in (True, False):
        if not is_signed and (block < 0).any():
            continue
        qmap = signed if is_signed else unsigned
        absmax = max(f32(np.abs(block).max()), f32(1e-12))
        codes = [quantize(f32(x), qmap.tolist(), absmax) for x in block]
        theirs = torchao_quantize(torch.from_numpy(block) / torch.tensor(absmax), qmap).tolist()
        differ += sum(a != b for a, b in zip(codes, theirs))
        total += len(codes)
        pairs = " ".join(f"(0x{bits(x):08x}, {c})," for x, c in zip(block, codes))
        print(f"    // {name}{'' if is_signed else ', unsigned'}")
        print(f"    ({str(is_signed).lower()}, 0x{bits(absmax):08x}, &[{pairs}]),")
print("];")
print(f"// torchao's quantize_8bit_with_qmap (dividing first) gives another code for {differ} of {total}.")
print(f"const TORCHAO_DIFFERS: (usize, usize) = ({differ}, {total});")
