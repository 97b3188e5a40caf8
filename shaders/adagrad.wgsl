// Adagrad, torch.optim.Adagrad single-tensor semantics (spec §3).

struct Scalars {
    neg_clr: f32,       // F(-lr / (1 + (t - 1) * lr_decay))
    weight_decay: f32,  // F(weight_decay)
    eps: f32,           // F(eps)
}

@group(1) @binding(0) var<storage, read_write> p: array<V>;
@group(1) @binding(1) var<storage, read_write> g: array<V>;
@group(1) @binding(2) var<storage, read_write> sum: array<V>;

// Element i (in units of V) of one step; `main` (shaders/elementwise.wgsl) calls it.
fn update(i: u32, s: Scalars) {
    let param = p[i];
    let d = direction(grad(i), param, s.weight_decay);
    let acc = fma(d, d, sum[i]);                                  // addcmul_(g, g, value=1)
    sum[i] = acc;
    p[i] = param + (s.neg_clr * d) / (sqrt(acc) + s.eps);
}
