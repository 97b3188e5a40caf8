// The entry point of a step with 8-bit blockwise state (crate::quant): one workgroup per
// block of 256 elements, one element per invocation. Each invocation runs the family's
// `update` on its element — an 8-bit slot's `load_NAME` dequantizes, its `store_NAME` keeps
// the new f32 value in the workgroup and folds its magnitude into the block's maximum (an
// atomic in workgroup memory), and the parameter update reads the f32 value — then the
// engine's `finish_block` quantizes each value with its block's absmax and stores the codes
// a word per invocation (16-bit parameters, kept in the workgroup too, likewise): one pass
// over memory, three barriers per block. A sub-range starts
// on a block of its tensor, so a block never spans two dispatches.

const BLOCK: u32 = 256u;
const BLOCK_WORDS: u32 = 65u;   // 64 words of codes, then the absmax
const MIN_ABSMAX: f32 = 1e-12;

// A block's absmax from the largest |x| of its new values as bits (each invocation's
// `atomicMax` as it stores its value: integers compare as the magnitudes do, and a NaN is
// larger than every number and propagates), at least MIN_ABSMAX.
fn block_absmax(largest: u32) -> f32 {
    return bitcast<f32>(max(largest, bitcast<u32>(MIN_ABSMAX)));
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

fn update_block(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) {
    let n = tensor_len();
    if skipped() {
        return;
    }
    let s = step_scalars();
    let block = wid.y * nwg.x + wid.x;
    let i = block * BLOCK + lid;
    let inside = i < n;
    start_block(lid);
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
