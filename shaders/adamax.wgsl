// Adamax, torch.optim.Adamax single-tensor semantics (spec §6): infinity-norm second
// moment with eps inside the maximum.

struct Scalars {
    one_minus_beta1: f32,  // F(1 - beta1)
    beta2: f32,            // F(beta2)
    eps: f32,              // F(eps)
    neg_clr: f32,          // F(-lr / (1 - beta1^t))
    weight_decay: f32,     // F(weight_decay)
}

@group(0) @binding(0) var<uniform> s: Scalars;
@group(1) @binding(0) var<storage, read_write> p: array<V>;
@group(1) @binding(1) var<storage, read_write> g: array<V>;
@group(1) @binding(2) var<storage, read_write> exp_avg: array<V>;
@group(1) @binding(3) var<storage, read_write> exp_inf: array<V>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = element_index(arrayLength(&p), wid, nwg, lid);
    if i >= arrayLength(&p) {
        return;
    }
    let param = p[i];
    let d = direction(g[i], param, s.weight_decay);
    let m = lerp_torch(exp_avg[i], d, s.one_minus_beta1);
    let u = nan_max(exp_inf[i] * s.beta2, abs(d) + s.eps);
    exp_avg[i] = m;
    exp_inf[i] = u;
    p[i] = param + (s.neg_clr * m) / u;
}
