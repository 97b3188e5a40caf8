// Lion, as lion-pytorch 0.2.5 (spec §11): sign of an interpolated momentum; the momentum
// itself is updated after the parameter.

struct Scalars {
    decay: f32,            // F(1 - lr * weight_decay), weight_decay / initial lr when decoupled
    neg_lr: f32,           // F(-lr)
    beta1: f32,            // F(beta1)
    one_minus_beta1: f32,  // F(1 - beta1)
    beta2: f32,            // F(beta2)
    one_minus_beta2: f32,  // F(1 - beta2)
}

// Element i (in units of V) of one step; `main` (shaders/elementwise.wgsl) calls it.
fn update(i: u32, s: Scalars) {
    let d = grad(i);
    let m = load_exp_avg(i);
    let update = sgn(fma(d, V(s.one_minus_beta1), m * s.beta1));
    store_p(i, fma(update, V(s.neg_lr), load_p(i) * s.decay));
    store_exp_avg(i, fma(d, V(s.one_minus_beta2), m * s.beta2));
}
