// NAdam, torch.optim.NAdam single-tensor semantics (spec §7): Dozat's momentum schedule,
// two separate addcdiv steps. The f32 running product of mu lives on the host.

struct Scalars {
    one_minus_beta1: f32,   // F(1 - beta1)
    beta2: f32,             // F(beta2)
    one_minus_beta2: f32,   // F(1 - beta2)
    bias_correction2: f32,  // F(1 - beta2^t)
    eps: f32,               // F(eps)
    weight_decay: f32,      // F(weight_decay), L2 form
    decay: f32,             // F(1 - lr * weight_decay), decoupled form
    grad_coef: f32,         // F(-lr * (1 - mu_t) / (1 - mu_product))
    exp_avg_coef: f32,      // F(-lr * mu_{t+1} / (1 - mu_product * mu_{t+1}))
}

// Element i (in units of V) of one step; `main` (shaders/elementwise.wgsl) calls it.
fn update(i: u32, s: Scalars) {
    let mo = adam_moments(grad(i), load_p(i), load_exp_avg(i), load_exp_avg_sq(i), s.decay, s.weight_decay, s.one_minus_beta1,
                          s.beta2, s.one_minus_beta2);
    let m = mo.m;
    let v = mo.v;
    store_exp_avg(i, m);
    store_exp_avg_sq(i, v);
    let denom = sqrt(v / s.bias_correction2) + s.eps;        // divide, then sqrt
    let param = mo.param + (s.grad_coef * mo.d) / denom;
    store_p(i, param + (s.exp_avg_coef * m) / denom);
}
