// The parameters moved between a schedule-free optimizer's train and eval points,
// p = lerp(p, z, weight) as torch's CPU lerp (src/optim/mod.rs `lerp`): y → x for eval,
// x → y for train. One dispatch per sub-range; the bind-group layouts are the health check's.

struct Swap {
    len: u32,      // elements of this sub-range
    weight: f32,   // F(1 - 1/beta1) into eval mode, F(1 - beta1) into train mode
}

@group(0) @binding(1) var<uniform> swap: Swap;
@group(1) @binding(0) var<storage, read_write> p: array<f32>;
@group(1) @binding(1) var<storage, read_write> z: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = id.y * nwg.x * 256u + id.x;
    if i >= swap.len {
        return;
    }
    let w = swap.weight;
    let a = p[i];
    let b = z[i];
    if abs(w) < 0.5 {
        p[i] = fma(w, b - a, a);
    } else {
        p[i] = fma(w - 1.0, b - a, b);
    }
}
