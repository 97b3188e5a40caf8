// Adafactor, torch.optim.Adafactor single-tensor semantics (spec §9). Not one element-wise
// pass: the step needs row and column sums of g² (factored second moment), the norm of p
// (relative step size) and the norm of the update (clipping). Every sum is a fixed-order,
// shared-memory tree or a fixed-order loop, so a step gives the same bits run to run.
//
// Entry points, in the order one step records them (per sub-range where marked):
//   row_sums (per sub-range)   rowsq[r]   = Σ_j g[r, j]²                 (tree per row)
//   col_blocks (per sub-range) colpart    = Σ_{i in block of 64 rows} g²  (one column per invocation)
//   p_sums (per sub-range)     psq chunk  = Σ p²                          (tree per 1024 elements)
//   finalize_vars              row_var, col_var = lerp(var, norm² / n, w)
//   finalize_alpha             mean(row_var) per matrix; alpha = max(eps2, RMS(p)) * rho
//   u_sums (per sub-range)     usq chunk  = Σ U²; the unfactored variance is updated here
//   finalize_coef              coef = -alpha / max(1, RMS(U) / d)
//   update (per sub-range)     p = p * (1 - lr*wd) + coef * U
//
// Under gradient control every entry reads the unscaled, clipped gradient (grad_at), and a
// skipped step (a non-finite gradient) writes neither state nor parameters: only the work
// buffer's sums, which the next step overwrites.

struct Scalars {
    w: f32,            // F(t ** beta2_decay), the weight of the new moment
    rho: f32,          // F(min(lr, 1 / sqrt(t)))
    eps1: f32,         // F(eps1)
    eps1_sq: f32,      // F(eps1 * eps1)
    eps2: f32,         // F(eps2)
    decay: f32,        // F(1 - lr * weight_decay)
    d: f32,            // F(d), the clipping threshold
}

// Where this sub-range sits in the tensor (whole matrices when factored).
struct Segment {
    first_row: u32,     // global index of its first row (factored)
    rows: u32,
    first_matrix: u32,
    matrices: u32,
    first_chunk: u32,   // global index of its first 1024-element chunk
    chunks: u32,
    len: u32,           // elements
    first_elem: u32,    // global index of its first element
}

// The tensor's shape and the regions of the `work` buffer.
struct Layout {
    rows_per_matrix: u32,   // M
    cols: u32,              // N
    matrices: u32,          // B, the product of the leading dimensions
    blocks: u32,            // ceil(M / 64)
    total_chunks: u32,
    rowsq_at: u32,
    colpart_at: u32,
    psq_at: u32,
    usq_at: u32,
    row_mean_at: u32,
    out_at: u32,            // [alpha, coef]
    col_at: u32,            // where col_var starts in `factors`
    sqrt_numel: f32,        // F(sqrt(numel)), of this tensor
}

override FACTORED: bool = true;

const CHUNK: u32 = 1024u;   // elements per chunk of the global sums (4 per invocation)
const BLOCK: u32 = 64u;     // rows per column block

@group(0) @binding(2) var<uniform> seg: Segment;
@group(0) @binding(3) var<uniform> lay: Layout;
@group(1) @binding(0) var<storage, read_write> p: array<f32>;
@group(1) @binding(1) var<storage, read_write> g: array<f32>;
@group(1) @binding(2) var<storage, read_write> variance: array<f32>;
@group(1) @binding(3) var<storage, read_write> factors: array<f32>;   // row_var, then col_var at lay.col_at
@group(1) @binding(4) var<storage, read_write> work: array<f32>;

// The second-moment estimate of the element at `local` in this sub-range.
fn estimate(local: u32) -> f32 {
    if FACTORED {
        let e = seg.first_elem + local;
        let mn = lay.rows_per_matrix * lay.cols;
        let b = e / mn;
        let i = (e % mn) / lay.cols;
        let j = e % lay.cols;
        // (row_var @ col_var) / clamp(mean(row_var), eps1): an outer product, one rounding.
        return (factors[b * lay.rows_per_matrix + i] * factors[lay.col_at + b * lay.cols + j]) / work[lay.row_mean_at + b];
    }
    return variance[local];
}

// U = rsqrt(max(V, eps1²)) * g, as torch's clamp_, rsqrt_ (1 / sqrt), mul_.
fn scaled(v: f32, d: f32, eps1_sq: f32) -> f32 {
    return (1.0 / sqrt(max(v, eps1_sq))) * d;
}

@compute @workgroup_size(RWG)
fn row_sums(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let r = group_index(wid, nwg);
    if r >= seg.rows {
        return;   // uniform: the whole workgroup has the same row
    }
    let start = r * lay.cols;
    var acc = 0.0;
    for (var j = lid; j < lay.cols; j = j + RWG) {
        let x = grad_at(start + j);
        acc = acc + x * x;
    }
    let total = tree_sum(lid, acc);
    if lid == 0u {
        work[lay.rowsq_at + seg.first_row + r] = total;
    }
}

@compute @workgroup_size(RWG)
fn col_blocks(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j = wid.x * RWG + lid;
    let q = wid.y;   // block of this sub-range: matrix q / blocks, block q % blocks
    if j >= lay.cols || q >= seg.matrices * lay.blocks {
        return;
    }
    let matrix = q / lay.blocks;
    let block = q % lay.blocks;
    let first = block * BLOCK;
    let last = min(lay.rows_per_matrix, first + BLOCK);
    var acc = 0.0;
    for (var i = first; i < last; i = i + 1u) {
        let x = grad_at((matrix * lay.rows_per_matrix + i) * lay.cols + j);
        acc = acc + x * x;
    }
    work[lay.colpart_at + ((seg.first_matrix + matrix) * lay.blocks + block) * lay.cols + j] = acc;
}

@compute @workgroup_size(RWG)
fn p_sums(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let c = group_index(wid, nwg);
    if c >= seg.chunks {
        return;
    }
    var acc = 0.0;
    for (var k = 0u; k < CHUNK / RWG; k = k + 1u) {
        let e = c * CHUNK + k * RWG + lid;
        if e < seg.len {
            let x = p[e];
            acc = acc + x * x;
        }
    }
    let total = tree_sum(lid, acc);
    if lid == 0u {
        work[lay.psq_at + seg.first_chunk + c] = total;
    }
}

@compute @workgroup_size(RWG)
fn finalize_vars(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let st = step_scalars();
    let t = group_index(wid, nwg) * RWG + lid;
    let col_count = lay.matrices * lay.cols;
    if skipped() {
        return;   // a skipped step writes no state (this entry has no barrier)
    }
    if t < col_count {
        let b = t / lay.cols;
        let j = t % lay.cols;
        var sum = 0.0;
        for (var k = 0u; k < lay.blocks; k = k + 1u) {
            sum = sum + work[lay.colpart_at + (b * lay.blocks + k) * lay.cols + j];
        }
        let norm = sqrt(sum);   // vector_norm(g, dim=-2).square_().div_(M)
        factors[lay.col_at + t] = lerp_torch(factors[lay.col_at + t], norm * norm / f32(lay.rows_per_matrix), st.w);
    } else if t < col_count + lay.matrices * lay.rows_per_matrix {
        let r = t - col_count;
        let norm = sqrt(work[lay.rowsq_at + r]);
        factors[r] = lerp_torch(factors[r], norm * norm / f32(lay.cols), st.w);
    }
}

@compute @workgroup_size(RWG)
fn finalize_alpha(@builtin(local_invocation_index) lid: u32) {
    let st = step_scalars();
    if FACTORED {
        for (var b = 0u; b < lay.matrices; b = b + 1u) {
            var acc = 0.0;
            for (var i = lid; i < lay.rows_per_matrix; i = i + RWG) {
                acc = acc + factors[b * lay.rows_per_matrix + i];
            }
            let total = tree_sum(lid, acc);
            if lid == 0u {
                work[lay.row_mean_at + b] = max(total / f32(lay.rows_per_matrix), st.eps1);
            }
        }
    }
    var acc = 0.0;
    for (var c = lid; c < lay.total_chunks; c = c + RWG) {
        acc = acc + work[lay.psq_at + c];
    }
    let total = tree_sum(lid, acc);
    if lid == 0u {
        work[lay.out_at] = max(st.eps2, sqrt(total) / lay.sqrt_numel) * st.rho;
    }
}

@compute @workgroup_size(RWG)
fn u_sums(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let st = step_scalars();
    let skip = skipped();
    let c = group_index(wid, nwg);
    if c >= seg.chunks {
        return;
    }
    var acc = 0.0;
    for (var k = 0u; k < CHUNK / RWG; k = k + 1u) {
        let e = c * CHUNK + k * RWG + lid;
        if e < seg.len {
            let d = signed(grad_at(e));
            if !FACTORED && !skip {
                variance[e] = lerp_torch(variance[e], d * d, st.w);
            }
            let u = scaled(estimate(e), d, st.eps1_sq);
            acc = acc + u * u;
        }
    }
    let total = tree_sum(lid, acc);
    if lid == 0u {
        work[lay.usq_at + seg.first_chunk + c] = total;
    }
}

@compute @workgroup_size(RWG)
fn finalize_coef(@builtin(local_invocation_index) lid: u32) {
    let st = step_scalars();
    var acc = 0.0;
    for (var c = lid; c < lay.total_chunks; c = c + RWG) {
        acc = acc + work[lay.usq_at + c];
    }
    let total = tree_sum(lid, acc);
    if lid == 0u {
        let denom = max(1.0, sqrt(total) / (lay.sqrt_numel * st.d));
        work[lay.out_at + 1u] = -work[lay.out_at] / denom;
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn update(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let st = step_scalars();
    let e = group_index(wid, nwg) * WORKGROUP_SIZE + lid;
    if e >= seg.len || skipped() {
        return;
    }
    var param = p[e];
    if WEIGHT_DECAY {
        param = param * st.decay;
    }
    let u = scaled(estimate(e), signed(grad_at(e)), st.eps1_sq);
    p[e] = fma(u, work[lay.out_at + 1u], param);   // add_(U, alpha=-alpha/denom)
}
