// Health of a tensor, on the GPU: how many values are NaN and how many ±inf, the largest
// finite |x|, and (for parameters tracked across a step) the largest finite |x - before|.
// One dispatch per sub-range; each writes the four words of its own slot of `out`, so the
// host sums counts per tensor in 64 bits. Maxima of non-negative floats are taken on their
// bit patterns, which order like the values, so u32 atomics suffice and the result does not
// depend on the order workgroups finish in.

struct Info {
    len: u32,    // elements of this sub-range
    slot: u32,   // its slot in `out`: [nan, inf, max |x| bits, max |x - before| bits]
    diff: u32,   // 1: `before` holds the values before the step; 0: no change to measure
}

@group(0) @binding(0) var<storage, read_write> out: array<atomic<u32>>;
@group(0) @binding(1) var<uniform> info: Info;
@group(1) @binding(0) var<storage, read_write> x: array<f32>;
@group(1) @binding(1) var<storage, read_write> before: array<f32>;

const WG: u32 = 256u;
const PER_THREAD: u32 = 16u;

var<workgroup> nan_count: atomic<u32>;
var<workgroup> inf_count: atomic<u32>;
var<workgroup> max_abs: atomic<u32>;
var<workgroup> max_change: atomic<u32>;

fn finite(bits: u32) -> bool {
    return (bits & 0x7f800000u) != 0x7f800000u;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let first = (wid.y * nwg.x + wid.x) * WG * PER_THREAD;
    if first >= info.len {
        return;   // uniform: the whole workgroup is past the end
    }
    if lid == 0u {
        atomicStore(&nan_count, 0u);
        atomicStore(&inf_count, 0u);
        atomicStore(&max_abs, 0u);
        atomicStore(&max_change, 0u);
    }
    workgroupBarrier();
    var nans = 0u;
    var infs = 0u;
    var top = 0u;
    var change = 0u;
    for (var k = 0u; k < PER_THREAD; k = k + 1u) {
        let e = first + k * WG + lid;
        if e < info.len {
            let bits = bitcast<u32>(x[e]) & 0x7fffffffu;   // |x|, by bit pattern
            if finite(bits) {
                top = max(top, bits);
                if info.diff != 0u {
                    let d = bitcast<u32>(abs(x[e] - before[e]));
                    if finite(d) {
                        change = max(change, d);
                    }
                }
            } else if bits == 0x7f800000u {
                infs = infs + 1u;
            } else {
                nans = nans + 1u;
            }
        }
    }
    if nans != 0u {
        atomicAdd(&nan_count, nans);
    }
    if infs != 0u {
        atomicAdd(&inf_count, infs);
    }
    atomicMax(&max_abs, top);
    atomicMax(&max_change, change);
    workgroupBarrier();
    if lid == 0u {
        let at = 4u * info.slot;
        atomicAdd(&out[at], atomicLoad(&nan_count));
        atomicAdd(&out[at + 1u], atomicLoad(&inf_count));
        atomicMax(&out[at + 2u], atomicLoad(&max_abs));
        atomicMax(&out[at + 3u], atomicLoad(&max_change));
    }
}
