// Adamax, torch.optim.Adamax single-tensor semantics (spec §6): infinity-norm second
// moment with eps inside the maximum.

struct Scalars {
    one_minus_beta1: f32,  // F(1 - beta1)
    beta2: f32,            // F(beta2)
    eps: f32,              // F(eps)
    neg_clr: f32,          // F(-lr / (1 - beta1^t))
    weight_decay: f32,     // F(weight_decay)
}

// Element i (in units of V) of one step; `main` (shaders/elementwise.wgsl) calls it.
fn update(i: u32, s: Scalars) {
    let param = load_p(i);
    let d = direction(grad(i), param, s.weight_decay);
    let m = lerp_torch(load_exp_avg(i), d, s.one_minus_beta1);
    let u = nan_max(load_exp_inf(i) * s.beta2, abs(d) + s.eps);
    store_exp_avg(i, m);
    store_exp_inf(i, u);
    store_p(i, param + (s.neg_clr * m) / u);
}
