// Adadelta, torch.optim.Adadelta single-tensor semantics (spec §5).

struct Scalars {
    rho: f32,            // F(rho)
    one_minus_rho: f32,  // F(1 - rho)
    eps: f32,            // F(eps)
    neg_lr: f32,         // F(-lr)
    weight_decay: f32,   // F(weight_decay)
}

// Element i (in units of V) of one step; `main` (shaders/elementwise.wgsl) calls it.
fn update(i: u32, s: Scalars) {
    let param = load_p(i);
    let d = direction(grad(i), param, s.weight_decay);
    let sq = fma(s.one_minus_rho * d, d, load_square_avg(i) * s.rho);
    let rms_g = sqrt(sq + s.eps);
    let acc = load_acc_delta(i);
    let delta = (sqrt(acc + s.eps) / rms_g) * d;
    store_square_avg(i, sq);
    store_acc_delta(i, fma(s.one_minus_rho * delta, delta, acc * s.rho));
    store_p(i, fma(delta, V(s.neg_lr), param));
}
