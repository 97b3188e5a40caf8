// Muon, torch.optim.Muon (torch/optim/_muon.py): momentum, Newton–Schulz orthogonalisation
// of the (Nesterov) momentum as tiled matrix products, and the update — all inside the
// step's compute pass. The CPU definition is src/optim/muon.rs.
//
// Entry points, in the order one step records them for each matrix (rows × cols, one bound
// sub-range; X is the matrix Newton–Schulz works on: m × n with m = min(rows, cols), the
// transpose of the momentum where rows > cols):
//   momentum   buf = lerp(buf, g, 1 - momentum); U = nesterov ? lerp(g, buf, momentum) : buf;
//              X = round(U) (transposed where tall); a tree sum of X² per workgroup
//   norm       ‖X‖_F from the workgroups' sums in their order, rounded, clamped at eps
//   scale      X = round(X / ‖X‖)
//   per Newton–Schulz iteration (the Segment uniform says which half of `mats` holds X):
//     gram     A  = round(X Xᵀ)                         (m × m)
//     poly     A' = round(c · A A + b · A)              (m × m), torch's addmm(A, A, A, beta=b, alpha=c)
//     combine  X' = round(A' X + a · X)                 (m × n), torch's addmm(X, A', X, beta=a)
//   apply      p = p · (1 - lr · weight_decay) - lr · ratio · X (transposed back)
// round() is to bf16 (NS_BF16, torch's default: products summed in f32, each result rounded
// once) or nothing (f32). A step that is not taken (skipped()) writes neither the momentum
// buffer nor the parameters: only `mats` and `work`, which the next step overwrites.

struct Scalars {
    one_minus_momentum: f32,  // F(1 - momentum)
    momentum: f32,            // F(momentum)
    decay: f32,               // F(1 - lr * weight_decay), with the unadjusted lr
    eps: f32,                 // F(eps), the floor of the Frobenius norm
    a: f32,                   // the quintic's coefficients, F(a), F(b), F(c)
    b: f32,
    c: f32,
    neg_lr: f32,              // F(-lr)
}

// Which half of `mats` a product reads X from and writes X' to (a window per iteration parity).
struct Segment {
    x_at: u32,
    out_at: u32,
    len: u32,   // elements of the parameter
    pad: u32,
}

// The matrix and the regions of `mats` and `work`.
struct Layout {
    rows: u32,        // of the parameter
    cols: u32,
    m: u32,           // X is m × n: m = min(rows, cols)
    n: u32,
    tall: u32,        // 1 where rows > cols (X is the transpose)
    x0_at: u32,       // the two halves X and X' take turns in
    x1_at: u32,
    gram_at: u32,     // A, m × m
    poly_at: u32,     // A', m × m
    partials: u32,    // workgroups of `momentum`: sums of X² at work[0..partials]
    norm_at: u32,     // work[norm_at] = the clamped norm
    pad0: u32,
    ratio: vec4<f32>, // F(the learning rate's factor for this shape) of each adjust_lr_fn
}

override NESTEROV: bool = true;
override NS_BF16: bool = true;
override NS_STEPS: u32 = 5u;
override ADJUST: u32 = 0u;
override TILED: bool = true;   // products through workgroup tiles (GPUs) or straight from storage (CPU devices)   // 0 original, 1 match_rms_adamw, 2 spectral_unclamped

const TILE: u32 = 16u;   // the products' tiles: 16 × 16 outputs per workgroup

@group(0) @binding(2) var<uniform> seg: Segment;
@group(0) @binding(3) var<uniform> lay: Layout;
@group(1) @binding(0) var<storage, read_write> p: array<f32>;
@group(1) @binding(1) var<storage, read_write> g: array<f32>;
@group(1) @binding(2) var<storage, read_write> momentum_buffer: array<f32>;
@group(1) @binding(3) var<storage, read_write> mats: array<f32>;   // X, X' (two halves), A, A'
@group(1) @binding(4) var<storage, read_write> work: array<f32>;

var<workgroup> tile_a: array<f32, 256>;   // TILE × TILE
var<workgroup> tile_b: array<f32, 256>;

fn round_ns(x: f32) -> f32 {
    if NS_BF16 {
        return bf16_decode(bf16_encode(x));
    }
    return x;
}

// Where element e of the parameter (row-major rows × cols) lies in X (m × n).
fn x_index(e: u32) -> u32 {
    if lay.tall == 1u {
        let r = e / lay.cols;
        let c = e % lay.cols;
        return c * lay.rows + r;
    }
    return e;
}

@compute @workgroup_size(RWG)
fn momentum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let st = step_scalars();
    let w = group_index(wid, nwg);
    let e = w * RWG + lid;
    var sq = 0.0;
    if e < seg.len {
        let grad = grad_at(e);
        let buf = lerp_torch(momentum_buffer[e], grad, st.one_minus_momentum);
        if !skipped() {
            momentum_buffer[e] = buf;
        }
        var u = buf;
        if NESTEROV {
            u = lerp_torch(grad, buf, st.momentum);
        }
        let x = round_ns(u);
        mats[seg.x_at + x_index(e)] = x;
        sq = x * x;
    }
    let total = tree_sum(lid, sq);
    if lid == 0u && w < lay.partials {
        work[w] = total;
    }
}

@compute @workgroup_size(RWG)
fn norm(@builtin(local_invocation_index) lid: u32) {
    let st = step_scalars();
    // Each invocation sums a strided set of partials in order, then one tree: a fixed order.
    var acc = 0.0;
    for (var i = lid; i < lay.partials; i = i + RWG) {
        acc = acc + work[i];
    }
    let total = tree_sum(lid, acc);
    if lid == 0u {
        work[lay.norm_at] = max(round_ns(sqrt(total)), round_ns(st.eps));
    }
}

@compute @workgroup_size(RWG)
fn scale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = group_index(wid, nwg) * RWG + lid;
    if i < seg.len {
        mats[seg.x_at + i] = round_ns(mats[seg.x_at + i] / work[lay.norm_at]);
    }
}

// out[i, j] = Σ_k left(i, k) · right(k, j) over a 16 × 16 tile of outputs, the operands
// staged through workgroup memory tile by tile; k runs in order, so the sum has one order.
// `kind` says which product: 0 gram (X Xᵀ), 1 poly (A A), 2 combine (A' X).
fn left(kind: u32, i: u32, k: u32) -> f32 {
    switch kind {
        case 0u: { return mats[seg.x_at + i * lay.n + k]; }
        case 1u: { return mats[lay.gram_at + i * lay.m + k]; }
        default: { return mats[lay.poly_at + i * lay.m + k]; }
    }
}

fn right(kind: u32, k: u32, j: u32) -> f32 {
    switch kind {
        case 0u: { return mats[seg.x_at + j * lay.n + k]; }
        case 1u: { return mats[lay.gram_at + k * lay.m + j]; }
        default: { return mats[seg.x_at + k * lay.n + j]; }
    }
}

fn tiled_sum(kind: u32, rows: u32, cols: u32, depth: u32, wid: vec3<u32>, lid: vec3<u32>) -> f32 {
    let i = wid.y * TILE + lid.y;
    let j = wid.x * TILE + lid.x;
    var acc = 0.0;
    if !TILED {
        // Each output from storage directly, in k order: no barriers (what CPU devices run best).
        if i < rows && j < cols {
            // Where left(kind, i, 0) and right(kind, 0, j) lie, and their steps in k.
            var a = 0u;
            var b = 0u;
            var a_step = 1u;
            var b_step = 1u;
            switch kind {
                case 0u: { a = seg.x_at + i * lay.n; b = seg.x_at + j * lay.n; }
                case 1u: { a = lay.gram_at + i * lay.m; b = lay.gram_at + j; b_step = lay.m; }
                default: { a = lay.poly_at + i * lay.m; b = seg.x_at + j; b_step = lay.n; }
            }
            for (var k = 0u; k < depth; k = k + 1u) {
                acc = acc + mats[a] * mats[b];
                a = a + a_step;
                b = b + b_step;
            }
        }
        return acc;
    }
    for (var k0 = 0u; k0 < depth; k0 = k0 + TILE) {
        let ka = k0 + lid.x;
        let kb = k0 + lid.y;
        tile_a[lid.y * TILE + lid.x] = select(0.0, left(kind, i, ka), i < rows && ka < depth);
        tile_b[lid.y * TILE + lid.x] = select(0.0, right(kind, kb, j), kb < depth && j < cols);
        workgroupBarrier();
        for (var k = 0u; k < TILE; k = k + 1u) {
            acc = acc + tile_a[lid.y * TILE + k] * tile_b[k * TILE + lid.x];
        }
        workgroupBarrier();
    }
    return acc;
}

@compute @workgroup_size(16, 16)
fn gram(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let acc = tiled_sum(0u, lay.m, lay.m, lay.n, wid, lid);
    let i = wid.y * TILE + lid.y;
    let j = wid.x * TILE + lid.x;
    if i < lay.m && j < lay.m {
        mats[lay.gram_at + i * lay.m + j] = round_ns(acc);
    }
}

@compute @workgroup_size(16, 16)
fn poly(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let st = step_scalars();
    let acc = tiled_sum(1u, lay.m, lay.m, lay.m, wid, lid);
    let i = wid.y * TILE + lid.y;
    let j = wid.x * TILE + lid.x;
    if i < lay.m && j < lay.m {
        mats[lay.poly_at + i * lay.m + j] = round_ns(st.c * acc + st.b * mats[lay.gram_at + i * lay.m + j]);
    }
}

@compute @workgroup_size(16, 16)
fn combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let st = step_scalars();
    let acc = tiled_sum(2u, lay.m, lay.n, lay.m, wid, lid);
    let i = wid.y * TILE + lid.y;
    let j = wid.x * TILE + lid.x;
    if i < lay.m && j < lay.n {
        mats[seg.out_at + i * lay.n + j] = round_ns(acc + st.a * mats[seg.x_at + i * lay.n + j]);
    }
}

@compute @workgroup_size(RWG)
fn apply(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let st = step_scalars();
    let e = group_index(wid, nwg) * RWG + lid;
    if e >= seg.len || skipped() {
        return;
    }
    // X after the last iteration: iteration i writes the half of parity i + 1.
    let o = mats[select(lay.x0_at, lay.x1_at, NS_STEPS % 2u == 1u) + x_index(e)];
    // param.mul_(1 - lr * weight_decay); param.add_(O, alpha=-adjusted_lr)
    p[e] = fma(o, st.neg_lr * lay.ratio[ADJUST], p[e] * st.decay);
}
