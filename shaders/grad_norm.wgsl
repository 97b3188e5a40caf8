// The global gradient norm of torch.nn.utils.clip_grad_norm_ and the non-finite check of
// torch.amp.GradScaler, over every gradient of a step: a fixed-order two-level reduction
// (`partial_sums` per 1024-element chunk of each sub-range, then `finalize`), so the same
// gradients give the same bits. The result is the gradient control the step kernels read:
// [1 / loss scale, clip coefficient, found_inf, total norm].

struct Info {
    first_chunk: u32,   // this sub-range's first chunk
    len: u32,           // this sub-range's elements
    total_chunks: u32,
    norm_inf: u32,      // 1: max |g|; 0: the 2-norm
    clip: u32,          // 1: clip to max_norm
    max_norm: f32,
    inv_scale: f32,     // F(1 / loss scale), when the scale is fixed
    dynamic: u32,       // 1: the loss scale lives in `scaler` and follows GradScaler's update
    growth_factor: f32,
    backoff_factor: f32,
    growth_interval: u32,
}

@group(0) @binding(0) var<storage, read_write> control: array<f32>;
@group(0) @binding(1) var<storage, read_write> partials: array<f32>;   // (norm part, non-finite) per chunk
@group(0) @binding(2) var<uniform> info: Info;
@group(0) @binding(3) var<storage, read_write> scaler: array<f32>;    // [scale, growth tracker]
@group(1) @binding(0) var<storage, read_write> g: array<f32>;

const RWG: u32 = 256u;

// 1 / loss scale for this step.
fn inv_scale() -> f32 {
    if info.dynamic != 0u {
        return 1.0 / scaler[0];
    }
    return info.inv_scale;
}
const CHUNK: u32 = 1024u;

var<workgroup> part: array<vec2<f32>, RWG>;

// Tree reduction of (norm part, non-finite flag): sums (or maxima for the inf-norm) and maxima.
fn tree(lid: u32, x: vec2<f32>) -> vec2<f32> {
    part[lid] = x;
    workgroupBarrier();
    for (var stride = RWG / 2u; stride > 0u; stride = stride / 2u) {
        if lid < stride {
            let a = part[lid];
            let b = part[lid + stride];
            let n = select(a.x + b.x, max(a.x, b.x), info.norm_inf != 0u);
            part[lid] = vec2<f32>(n, max(a.y, b.y));
        }
        workgroupBarrier();
    }
    let total = part[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(RWG)
fn partial_sums(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let c = wid.y * nwg.x + wid.x;
    if c * CHUNK >= info.len {
        return;   // uniform: the whole workgroup has the same chunk
    }
    var acc = vec2<f32>(0.0, 0.0);
    for (var k = 0u; k < CHUNK / RWG; k = k + 1u) {
        let e = c * CHUNK + k * RWG + lid;
        if e < info.len {
            let raw = g[e];
            if (bitcast<u32>(raw) & 0x7f800000u) == 0x7f800000u {
                acc.y = 1.0;   // NaN or ±inf, by bit pattern
            }
            let x = raw * inv_scale();
            acc.x = select(fma(x, x, acc.x), max(acc.x, abs(x)), info.norm_inf != 0u);
        }
    }
    let total = tree(lid, acc);
    if lid == 0u {
        partials[2u * (info.first_chunk + c)] = total.x;
        partials[2u * (info.first_chunk + c) + 1u] = total.y;
    }
}

@compute @workgroup_size(RWG)
fn finalize(@builtin(local_invocation_index) lid: u32) {
    var acc = vec2<f32>(0.0, 0.0);
    for (var c = lid; c < info.total_chunks; c = c + RWG) {
        let x = partials[2u * c];
        acc.x = select(acc.x + x, max(acc.x, x), info.norm_inf != 0u);
        acc.y = max(acc.y, partials[2u * c + 1u]);
    }
    let total = tree(lid, acc);
    if lid == 0u {
        let norm = select(sqrt(total.x), total.x, info.norm_inf != 0u);
        var coef = 1.0;
        if info.clip != 0u {
            coef = min((1.0 / (norm + 1e-6)) * info.max_norm, 1.0);   // max_norm / (total + 1e-6), clamped
        }
        control[0] = inv_scale();
        control[1] = coef;
        control[2] = total.y;
        control[3] = norm;
    }
}

// torch.amp.GradScaler.update, after the step's kernels: back off on a non-finite gradient,
// grow after `growth_interval` finite steps in a row (unless the grown scale overflows).
@compute @workgroup_size(1)
fn update_scale() {
    if info.dynamic == 0u {
        return;
    }
    if control[2] != 0.0 {
        scaler[0] = scaler[0] * info.backoff_factor;
        scaler[1] = 0.0;
    } else {
        let tracker = scaler[1] + 1.0;
        if u32(tracker) == info.growth_interval {
            let grown = scaler[0] * info.growth_factor;
            if (bitcast<u32>(grown) & 0x7f800000u) != 0x7f800000u {
                scaler[0] = grown;
            }
            scaler[1] = 0.0;
        } else {
            scaler[1] = tracker;
        }
    }
}
