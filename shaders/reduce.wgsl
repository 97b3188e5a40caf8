// The reduction stage of a staged optimizer (LAMB, LARS): the family's
// `reduce_update(i, s) -> vec4<f32>` updates element i (in units of V) as the stage requires
// and returns up to four terms (‖p‖², ‖u‖², …) it contributes; each workgroup sums its
// invocations' terms by a fixed tree and writes one partial. `shaders/reduce_finalize.wgsl`
// then sums each tensor's partials, in order, into `tensor_sums`, which the later stages of
// the step read. Same inputs, same bits; no pass rewrites the gradients.

// This sub-range's place in the step: its tensor, and the first partial slot of its vec4 and
// of its tail dispatch. Bound by dynamic offset, one window per sub-range.
struct SegmentReduce {
    tensor: u32,
    vec4_partials: u32,
    tail_partials: u32,
}
@group(2) @binding(0) var<storage, read_write> partials: array<vec4<f32>>;
@group(2) @binding(1) var<storage, read_write> tensor_sums: array<vec4<f32>>;
@group(2) @binding(2) var<uniform> segment: SegmentReduce;

// This tensor's sums from the step's reduction.
fn reduced() -> vec4<f32> {
    return tensor_sums[segment.tensor];
}

var<workgroup> lanes: array<vec4<f32>, WORKGROUP_SIZE>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let n = arrayLength(&p);
    let w = wid.y * nwg.x + wid.x;
    var acc = vec4<f32>(0.0);
    if !skipped() {
        let s = step_scalars();
        let first = select(0u, n & ~3u, TAIL) + w * WORKGROUP_SIZE * ITEMS + lid;
        for (var k = 0u; k < ITEMS; k = k + 1u) {
            let i = first + k * WORKGROUP_SIZE;
            if i < n {
                acc = acc + reduce_update(i, s);
            }
        }
    }
    lanes[lid] = acc;
    workgroupBarrier();
    // WORKGROUP_SIZE need not be a power of two: fold the top down to one first.
    var width = 1u;
    while width * 2u <= WORKGROUP_SIZE {
        width = width * 2u;
    }
    if lid >= width {
        lanes[lid - width] = lanes[lid - width] + lanes[lid];
    }
    workgroupBarrier();
    for (var stride = width / 2u; stride > 0u; stride = stride / 2u) {
        if lid < stride {
            lanes[lid] = lanes[lid] + lanes[lid + stride];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        partials[select(segment.vec4_partials, segment.tail_partials, TAIL) + w] = lanes[0];
    }
}
