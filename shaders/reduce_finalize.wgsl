// Sums each tensor's workgroup partials of a reduction stage, in a fixed order, into one
// vec4 per tensor (see shaders/reduce.wgsl). One workgroup per tensor; stands alone.

struct Range {
    first: u32,
    end: u32,
}
@group(0) @binding(0) var<storage, read_write> partials: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> tensor_sums: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> ranges: array<Range>;

const LANES: u32 = 256u;
var<workgroup> lanes: array<vec4<f32>, LANES>;

@compute @workgroup_size(LANES)
fn finalize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let t = wid.y * nwg.x + wid.x;
    let tensors = arrayLength(&ranges);
    var acc = vec4<f32>(0.0);
    if t < tensors {
        let r = ranges[t];
        for (var c = r.first + lid; c < r.end; c = c + LANES) {
            acc = acc + partials[c];
        }
    }
    lanes[lid] = acc;
    workgroupBarrier();
    for (var stride = LANES / 2u; stride > 0u; stride = stride / 2u) {
        if lid < stride {
            lanes[lid] = lanes[lid] + lanes[lid + stride];
        }
        workgroupBarrier();
    }
    if lid == 0u && t < tensors {
        tensor_sums[t] = lanes[0];
    }
}
