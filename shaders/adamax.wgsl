// Adamax, torch.optim.Adamax single-tensor semantics (spec §6): infinity-norm second
// moment with eps inside the maximum.

struct Scalars {
    one_minus_beta1: f32,  // F(1 - beta1)
    beta2: f32,            // F(beta2)
    eps: f32,              // F(eps)
    neg_clr: f32,          // F(-lr / (1 - beta1^t))
    weight_decay: f32,     // F(weight_decay)
}

@group(1) @binding(0) var<storage, read_write> p: array<V>;
@group(1) @binding(1) var<storage, read_write> g: array<V>;
@group(1) @binding(2) var<storage, read_write> exp_avg: array<V>;
@group(1) @binding(3) var<storage, read_write> exp_inf: array<V>;

// Element i (in units of V) of one step; `main` (shaders/elementwise.wgsl) calls it.
fn update(i: u32, s: Scalars) {
    let param = p[i];
    let d = direction(grad(i), param, s.weight_decay);
    let m = lerp_torch(exp_avg[i], d, s.one_minus_beta1);
    let u = nan_max(exp_inf[i] * s.beta2, abs(d) + s.eps);
    exp_avg[i] = m;
    exp_inf[i] = u;
    p[i] = param + (s.neg_clr * m) / u;
}
