// The reduction stage of a staged optimizer (LAMB, LARS): the family's
// `reduce_update(i, s) -> vec4<f32>` updates element i (in units of V) as the stage requires
// and returns up to four terms (‖p‖², ‖u‖², …) it contributes; each workgroup sums its
// invocations' terms by a fixed tree and writes one partial. `shaders/reduce_finalize.wgsl`
// then sums each tensor's partials, in order, into `tensor_sums`, which the later stages of
// the step read (`reduced()`). A per-block reduction instead gives each block of BLOCK
// elements one workgroup and one slot, read by `block_reduced(i)`. Same inputs, same bits;
// no pass rewrites the gradients.

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

// A per-block reduction (Scope::Block): the block's size in elements and whether its terms
// are combined by maximum (absmax) rather than summed. Set for the step's every pipeline.
override BLOCK: u32 = 4u;
override BLOCK_MAX: bool = false;

// The terms of element i's block (i in units of V), from the step's per-block reduction;
// `segment.vec4_partials` is the sub-range's first block slot.
fn block_reduced(i: u32) -> vec4<f32> {
    return partials[segment.vec4_partials + select(i * 4u, i, TAIL) / BLOCK];
}

fn combine(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    if BLOCK_MAX {
        return max(a, b);
    }
    return a + b;
}

var<workgroup> lanes: array<vec4<f32>, WORKGROUP_SIZE>;

// The workgroup's terms combined by a fixed tree; the result is in lanes[0].
fn tree(lid: u32, acc: vec4<f32>) {
    lanes[lid] = acc;
    workgroupBarrier();
    // WORKGROUP_SIZE need not be a power of two: fold the top down to one first.
    var width = 1u;
    while width * 2u <= WORKGROUP_SIZE {
        width = width * 2u;
    }
    if lid >= width {
        lanes[lid - width] = combine(lanes[lid - width], lanes[lid]);
    }
    workgroupBarrier();
    for (var stride = width / 2u; stride > 0u; stride = stride / 2u) {
        if lid < stride {
            lanes[lid] = combine(lanes[lid], lanes[lid + stride]);
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let n = tensor_len();
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
    tree(lid, acc);
    if lid == 0u {
        partials[select(segment.vec4_partials, segment.tail_partials, TAIL) + w] = lanes[0];
    }
}

// One workgroup per block of the sub-range, at scalar width (i is an element): the block's
// terms, combined by sum or maximum in a fixed order, into its slot. No finalize follows.
@compute @workgroup_size(WORKGROUP_SIZE)
fn reduce_blocks(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let n = tensor_len();
    let first = (wid.y * nwg.x + wid.x) * BLOCK;
    var acc = vec4<f32>(0.0);
    if !skipped() {
        let s = step_scalars();
        let end = min(first + BLOCK, n);
        for (var i = first + lid; i < end; i = i + WORKGROUP_SIZE) {
            acc = combine(acc, reduce_update(i, s));
        }
    }
    tree(lid, acc);
    if lid == 0u && first < n {
        partials[segment.vec4_partials + first / BLOCK] = lanes[0];
    }
}
