// Conversions between f32 and the 16-bit element formats, by bit operations, so that every
// device stores exactly what the CPU reference does (`ElementFormat::encode` and `decode`,
// torch's `.to(dtype)` on the CPU): WGSL leaves the rounding of f32 → f16 conversions
// (`pack2x16float`) to the implementation, and has no bf16 at all. Values are u32 holding
// 16 bits.

fn bf16_decode(b: u32) -> f32 {
    return bitcast<f32>(b << 16u);
}

// To nearest, ties to even (c10's round_to_nearest_even); every NaN as 0xffff.
fn bf16_encode(x: f32) -> u32 {
    let u = bitcast<u32>(x);
    if (u & 0x7fffffffu) > 0x7f800000u {
        return 0xffffu;
    }
    return (u + 0x7fffu + ((u >> 16u) & 1u)) >> 16u;
}

// Exact; a NaN keeps its payload, quieted (as the `half` crate widens).
fn f16_decode(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if e == 0x1fu {
        return bitcast<f32>(sign | select(0x7f800000u, 0x7fc00000u | (m << 13u), m != 0u));
    }
    if e == 0u {
        let v = f32(m) * 5.9604644775390625e-8;   // m · 2^-24, exact
        return select(v, -v, sign != 0u);
    }
    return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}

// To nearest, ties to even, overflow to ±inf, subnormals kept; a NaN quieted with its sign
// and top payload bits (x86's F16C conversion, which torch's CPU uses).
fn f16_encode(x: f32) -> u32 {
    let u = bitcast<u32>(x);
    let sign = (u >> 16u) & 0x8000u;
    let a = u & 0x7fffffffu;
    if a > 0x7f800000u {
        return sign | 0x7e00u | ((a >> 13u) & 0x3ffu);
    }
    if a >= 0x477ff000u {
        return sign | 0x7c00u;   // ±inf, or at least 65520, which rounds to it
    }
    if a >= 0x38800000u {
        let r = a - 0x38000000u;   // the exponent rebiased from 127 to 15
        return sign | ((r + 0xfffu + ((r >> 13u) & 1u)) >> 13u);
    }
    if a < 0x33000000u {
        return sign;   // below half the least subnormal, 2^-25
    }
    // A subnormal: the significand shifted right by 14 to 24 places, to nearest even.
    let shift = 126u - (a >> 23u);
    let mant = (a & 0x7fffffu) | 0x800000u;
    var q = mant >> shift;
    let rem = mant & ((1u << shift) - 1u);
    let half = 1u << (shift - 1u);
    if rem > half || (rem == half && (q & 1u) == 1u) {
        q = q + 1u;
    }
    return sign | q;
}

// Stochastic rounding's random bits (`precision::random_bits`): the top half of the first
// word of pcg4d (Jarzynski and Olano, JCGT 2020) keyed by (index low word, step, seed low
// word, seed high word ^ index high word · 0x9e3779b9).
fn random_bits(index_lo: u32, index_hi: u32, step: u32, seed: vec2<u32>) -> u32 {
    var v = vec4<u32>(index_lo, step, seed.x, seed.y ^ (index_hi * 0x9e3779b9u)) * 1664525u + 1013904223u;
    v.x += v.y * v.w;
    v.y += v.z * v.x;
    v.z += v.x * v.y;
    v.w += v.y * v.z;
    v ^= v >> vec4<u32>(16u);
    v.x += v.y * v.w;
    v.y += v.z * v.x;
    v.z += v.x * v.y;
    v.w += v.y * v.z;
    return v.x >> 16u;
}

// torchao's bf16 stochastic rounding (`precision::bf16_stochastic`): truncated, plus one
// where the random 16 bits `r` are below the dropped half; a NaN as 0xffff.
fn bf16_encode_stochastic(x: f32, r: u32) -> u32 {
    let u = bitcast<u32>(x);
    if (u & 0x7fffffffu) > 0x7f800000u {
        return 0xffffu;
    }
    return (u >> 16u) + u32(r < (u & 0xffffu));
}
