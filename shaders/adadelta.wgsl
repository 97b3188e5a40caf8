// Adadelta, torch.optim.Adadelta single-tensor semantics (spec §5).

struct Scalars {
    rho: f32,            // F(rho)
    one_minus_rho: f32,  // F(1 - rho)
    eps: f32,            // F(eps)
    neg_lr: f32,         // F(-lr)
    weight_decay: f32,   // F(weight_decay)
}

@group(1) @binding(0) var<storage, read_write> p: array<V>;
@group(1) @binding(1) var<storage, read_write> g: array<V>;
@group(1) @binding(2) var<storage, read_write> square_avg: array<V>;
@group(1) @binding(3) var<storage, read_write> acc_delta: array<V>;

// Element i (in units of V) of one step; `main` (shaders/elementwise.wgsl) calls it.
fn update(i: u32, s: Scalars) {
    let param = p[i];
    let d = direction(grad(i), param, s.weight_decay);
    let sq = fma(s.one_minus_rho * d, d, square_avg[i] * s.rho);
    let rms_g = sqrt(sq + s.eps);
    let acc = acc_delta[i];
    let delta = (sqrt(acc + s.eps) / rms_g) * d;
    square_avg[i] = sq;
    acc_delta[i] = fma(s.one_minus_rho * delta, delta, acc * s.rho);
    p[i] = fma(delta, V(s.neg_lr), param);
}
