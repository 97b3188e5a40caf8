// Adagrad, torch.optim.Adagrad single-tensor semantics (spec §3).

struct Scalars {
    neg_clr: f32,       // F(-lr / (1 + (t - 1) * lr_decay))
    weight_decay: f32,  // F(weight_decay)
    eps: f32,           // F(eps)
}

// Element i (in units of V) of one step; `main` (shaders/elementwise.wgsl) calls it.
fn update(i: u32, s: Scalars) {
    let param = load_p(i);
    let d = direction(grad(i), param, s.weight_decay);
    let acc = fma(d, d, load_sum(i));                                  // addcmul_(g, g, value=1)
    store_sum(i, acc);
    store_p(i, param + (s.neg_clr * d) / (sqrt(acc) + s.eps));
}
