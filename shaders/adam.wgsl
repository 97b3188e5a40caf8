// Adam and AdamW, torch.optim.Adam single-tensor semantics (spec §2). AdamW is
// DECOUPLED = true; AMSGrad keeps the running maximum of the raw second moment.

struct Scalars {
    one_minus_beta1: f32,        // F(1 - beta1), the lerp weight
    beta2: f32,                  // F(beta2)
    one_minus_beta2: f32,        // F(1 - beta2)
    neg_step_size: f32,          // F(-lr / (1 - beta1^t))
    bias_correction2_sqrt: f32,  // F(sqrt(1 - beta2^t))
    eps: f32,                    // F(eps)
    weight_decay: f32,           // F(weight_decay), L2 form
    decay: f32,                  // F(1 - lr * weight_decay), decoupled form
}

override AMSGRAD: bool = false;

// Element i (in units of V) of one step; `main` (shaders/elementwise.wgsl) calls it.
fn update(i: u32, s: Scalars) {
    let mo = adam_moments(grad(i), load_p(i), load_exp_avg(i), load_exp_avg_sq(i), s.decay, s.weight_decay, s.one_minus_beta1,
                          s.beta2, s.one_minus_beta2);
    let m = mo.m;
    let v = mo.v;
    store_exp_avg(i, m);
    store_exp_avg_sq(i, v);
    var second = v;
    if AMSGRAD {
        second = nan_max(load_max_exp_avg_sq(i), v);
        store_max_exp_avg_sq(i, second);
    }
    let denom = sqrt(second) / s.bias_correction2_sqrt + s.eps;
    store_p(i, mo.param + (s.neg_step_size * m) / denom);              // addcdiv_(m, denom, value=-step_size)
}
