// Pieces every shaped family's entries share (Adafactor's, Muon's): put after the prelude
// by the engine. The family declares the gradient binding `g` these read.

const RWG: u32 = 256u;   // invocations of the shaped families' reduction kernels

var<workgroup> partial: array<f32, RWG>;

// Tree sum of one value per invocation; every invocation gets the total.
fn tree_sum(lid: u32, x: f32) -> f32 {
    partial[lid] = x;
    workgroupBarrier();
    for (var stride = RWG / 2u; stride > 0u; stride = stride / 2u) {
        if lid < stride {
            partial[lid] = partial[lid] + partial[lid + stride];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

// The gradient as the step sees it: unscaled by the loss scale, then multiplied by the clip
// coefficient (torch's unscale_, then clip_grad_norm_), as the element-wise driver's grad().
fn grad_at(i: u32) -> f32 {
    if CONTROLLED {
        return (g[i] * grad_control[0]) * grad_control[1];
    }
    return g[i];
}

// A workgroup's index in a 2-D grid (more than 65535 workgroups fold into y).
fn group_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}
