// A model's f32 view of 16-bit parameters, and its f32 gradients stored as the optimizer
// reads them: widened exactly, narrowed to nearest even, by the crate's own conversions
// (wgpu_optim::format::WGSL, put before this source). A word holds two elements.

override F16: bool = false;

@group(0) @binding(0) var<storage, read_write> half: array<u32>;
@group(0) @binding(1) var<storage, read_write> full: array<f32>;
struct Info { n: u32, _pad0: u32, _pad1: u32, _pad2: u32 }
@group(0) @binding(2) var<uniform> info: Info;

fn decode(h: u32) -> f32 {
    return select(bf16_decode(h), f16_decode(h), F16);
}

fn encode(x: f32) -> u32 {
    if F16 {
        return f16_encode(x);
    }
    return bf16_encode(x);
}

@compute @workgroup_size(64)
fn widen(@builtin(global_invocation_id) id: vec3<u32>) {
    let e = 2u * id.x;
    if e < info.n {
        full[e] = decode(half[id.x] & 0xffffu);
        if e + 1u < info.n {
            full[e + 1u] = decode(half[id.x] >> 16u);
        }
    }
}

@compute @workgroup_size(64)
fn narrow(@builtin(global_invocation_id) id: vec3<u32>) {
    let e = 2u * id.x;
    if e < info.n {
        let high = select(0u, encode(full[e + 1u]), e + 1u < info.n);
        half[id.x] = encode(full[e]) | (high << 16u);
    }
}
