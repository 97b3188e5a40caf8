// Rows-only steps: SparseAdam (torch.optim.SparseAdam: Adam over the rows of a table a step's
// sparse gradient touches, the others untouched) or plain SGD (`sgd`); src/optim/sparse_adam.rs
// is the CPU twin. One workgroup
// per gradient entry k: the entry whose row appeared before it leaves the row to that first
// entry; the first sums every entry of its row in their order (torch's coalesce) and
// updates the row's elements. O(nnz²) index comparisons, O(nnz · dim) values read.

struct Scalars {
    one_minus_beta1: f32,  // F(1 - beta1)
    one_minus_beta2: f32,  // F(1 - beta2)
    neg_step_size: f32,    // F(-lr * sqrt(1 - beta2^t) / (1 - beta1^t))
    eps: f32,              // F(eps)
    maximize: u32,
    sgd: u32,              // 1: plain SGD, p = fma(g, F(-lr), p) per entry (neg_step_size is F(-lr))
}

struct Info {
    nnz: u32,    // gradient entries (rows of `values`)
    dim: u32,    // elements per row
    rows: u32,   // rows of the table
    pad: u32,
}

@group(0) @binding(0) var<uniform> s: Scalars;
@group(0) @binding(1) var<uniform> info: Info;
@group(0) @binding(2) var<storage, read> indices: array<u32>;
@group(0) @binding(3) var<storage, read> values: array<f32>;
@group(0) @binding(4) var<storage, read_write> p: array<f32>;
@group(0) @binding(5) var<storage, read_write> exp_avg: array<f32>;
@group(0) @binding(6) var<storage, read_write> exp_avg_sq: array<f32>;

const WG: u32 = 256u;

var<workgroup> seen: atomic<u32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let k = wid.y * nwg.x + wid.x;
    if k >= info.nnz {
        return;   // uniform: the whole workgroup has the same entry
    }
    let r = indices[k];
    if lid == 0u {
        atomicStore(&seen, 0u);
    }
    workgroupBarrier();
    for (var j = lid; j < k; j = j + WG) {
        if indices[j] == r {
            atomicOr(&seen, 1u);
        }
    }
    workgroupBarrier();
    if atomicLoad(&seen) != 0u || r >= info.rows {
        return;   // an earlier entry has this row (the host checked every index is in range)
    }
    if s.sgd == 1u {
        // torch's SGD adds a sparse gradient entry by entry, each a fused multiply-add.
        for (var d = lid; d < info.dim; d = d + WG) {
            let e = r * info.dim + d;
            var x = p[e];
            for (var j = k; j < info.nnz; j = j + 1u) {
                if indices[j] == r {
                    let g = select(values[j * info.dim + d], -values[j * info.dim + d], s.maximize == 1u);
                    x = fma(g, s.neg_step_size, x);
                }
            }
            p[e] = x;
        }
        return;
    }
    for (var d = lid; d < info.dim; d = d + WG) {
        var g = 0.0;
        for (var j = k; j < info.nnz; j = j + 1u) {
            if indices[j] == r {
                g = g + values[j * info.dim + d];
            }
        }
        if s.maximize == 1u {
            g = -g;
        }
        let e = r * info.dim + d;
        let old_m = exp_avg[e];
        let old_v = exp_avg_sq[e];
        let m = old_m + (g - old_m) * s.one_minus_beta1;
        let v = old_v + (g * g - old_v) * s.one_minus_beta2;
        exp_avg[e] = m;
        exp_avg_sq[e] = v;
        p[e] = p[e] + s.neg_step_size * (m / (sqrt(v) + s.eps));
    }
}
