// AdamWScheduleFree, the authors' package (schedulefree 1.4.1): the parameters hold y, the
// state z and the second moment; src/optim/schedule_free.rs is the CPU twin.

struct Scalars {
    ckp1: f32,              // F(weight / weight_sum), the averaging weight of this step
    y_coef: f32,            // F(lr_t * (beta1 * (1 - ckp1) - 1))
    neg_lr: f32,            // F(-lr_t)
    weight_decay: f32,      // F(weight_decay)
    first_step: u32,        // 1 on the first step: z starts as the parameters
    beta2: f32,             // F(beta2)
    one_minus_beta2: f32,   // F(1 - beta2)
    bias_correction2: f32,  // F(1 - beta2^t)
    eps: f32,               // F(eps)
}

// Element i (in units of V) of one step; `main` (shaders/elementwise.wgsl) calls it.
fn update(i: u32, s: Scalars) {
    let y = load_p(i);
    let g = grad(i);
    var z = load_z(i);
    if s.first_step == 1u {
        z = y;
    }
    // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1-beta2)
    let v = fma(g * s.one_minus_beta2, g, load_exp_avg_sq(i) * s.beta2);
    // grad / (sqrt(exp_avg_sq / bias_correction2) + eps)
    var d = g / (sqrt(v / s.bias_correction2) + s.eps);
    if WEIGHT_DECAY {
        d = fma(y, V(s.weight_decay), d);
    }
    let y1 = lerp_torch(y, z, s.ckp1);
    store_exp_avg_sq(i, v);
    store_p(i, fma(d, V(s.y_coef), y1));
    store_z(i, fma(d, V(s.neg_lr), z));
}
