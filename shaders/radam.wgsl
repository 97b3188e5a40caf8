// RAdam, torch.optim.RAdam single-tensor semantics (spec §8): the variance rectification
// applies once rho_t > 5; before that the step is bias-corrected momentum alone.

struct Scalars {
    one_minus_beta1: f32,        // F(1 - beta1)
    beta2: f32,                  // F(beta2)
    one_minus_beta2: f32,        // F(1 - beta2)
    bias_correction1: f32,       // F(1 - beta1^t)
    bias_correction2_sqrt: f32,  // F(sqrt(1 - beta2^t))
    eps: f32,                    // F(eps)
    lr: f32,                     // F(lr)
    rect: f32,                   // F(rectification term), when rectified
    weight_decay: f32,           // F(weight_decay), L2 form
    decay: f32,                  // F(1 - lr * weight_decay), decoupled form
    rectified: u32,              // rho_t > 5
}

// Element i (in units of V) of one step; `main` (shaders/elementwise.wgsl) calls it.
fn update(i: u32, s: Scalars) {
    let mo = adam_moments(grad(i), load_p(i), load_exp_avg(i), load_exp_avg_sq(i), s.decay, s.weight_decay, s.one_minus_beta1,
                          s.beta2, s.one_minus_beta2);
    let m = mo.m;
    let v = mo.v;
    store_exp_avg(i, m);
    store_exp_avg_sq(i, v);
    let corrected = m / s.bias_correction1;
    var u = corrected * s.lr;
    if s.rectified != 0u {
        let adaptive = (V(1.0) / (sqrt(v) + s.eps)) * s.bias_correction2_sqrt;  // eps before bias correction
        u = (u * adaptive) * s.rect;
    }
    store_p(i, mo.param - u);
}
