// The entry point of a step with 8-bit blockwise state (crate::quant): one workgroup per
// block of 256 elements, one element per invocation. Each invocation runs the family's
// `update` on its element — an 8-bit slot's `load_NAME` dequantizes, its `store_NAME` keeps
// the new f32 value in the workgroup, and the parameter update reads that f32 value — then
// the engine's `finish_block` finds each slot's new absmax over the block (a reduction in
// workgroup memory), quantizes, and stores the codes a word per invocation (16-bit
// parameters, kept in the workgroup too, likewise): one pass over memory. A sub-range starts
// on a block of its tensor, so a block never spans two dispatches.

const BLOCK: u32 = 256u;
const BLOCK_WORDS: u32 = 65u;   // 64 words of codes, then the absmax
const MIN_ABSMAX: f32 = 1e-12;

var<workgroup> block_bits: array<u32, BLOCK>;
var<workgroup> block_codes: array<u32, BLOCK>;

// The block's absmax from each invocation's |x| as bits (`bits` with the sign cleared
// here): the largest, compared as integers (a NaN is larger than every number and
// propagates), at least MIN_ABSMAX. Called in uniform control flow by every invocation.
fn block_absmax(bits: u32, lid: u32) -> f32 {
    block_bits[lid] = bits & 0x7fffffffu;
    for (var stride = BLOCK / 2u; stride > 0u; stride = stride / 2u) {
        workgroupBarrier();
        if lid < stride {
            block_bits[lid] = max(block_bits[lid], block_bits[lid + stride]);
        }
    }
    workgroupBarrier();
    return bitcast<f32>(max(workgroupUniformLoad(&block_bits[0]), bitcast<u32>(MIN_ABSMAX)));
}

// `quant::quantize`: the largest code c with x >= map[c] · absmax, then c + 1 where
// x - map[c] · absmax >= (map[c + 1] · absmax - map[c] · absmax) · 0.5; `map` is 0 for the
// signed map, 256 for the unsigned. Correctly rounded operations only.
fn quantize(x: f32, absmax: f32, map: u32) -> u32 {
    var c = 0u;
    for (var step = 128u; step > 0u; step = step / 2u) {
        if x >= qmap(map + c + step) * absmax {
            c = c + step;
        }
    }
    let up = min(c + 1u, 255u);
    let low = qmap(map + c) * absmax;
    let high = qmap(map + up) * absmax;
    return select(c, up, x - low >= (high - low) * 0.5);
}

// The block's codes (in `block_codes`) four to a word: word `lid` of the block's 64.
fn packed_codes(lid: u32) -> u32 {
    let c = 4u * lid;
    return block_codes[c] | (block_codes[c + 1u] << 8u) | (block_codes[c + 2u] << 16u) | (block_codes[c + 3u] << 24u);
}

fn update_block(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) {
    let n = tensor_len();
    if skipped() {
        return;
    }
    let s = step_scalars();
    let block = wid.y * nwg.x + wid.x;
    let i = block * BLOCK + lid;
    let inside = i < n;
    if inside {
        update(i, s);
    }
    finish_block(block, lid, inside, n);
}

@compute @workgroup_size(256)
fn main_blockwise(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    update_block(wid, nwg, lid);
}

// The step's last dispatch: the same, and its first invocation advances the counter.
@compute @workgroup_size(256)
fn main_blockwise_advancing(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    if wid.x == 0u && wid.y == 0u && lid == 0u {
        advance_counter();
    }
    update_block(wid, nwg, lid);
}
