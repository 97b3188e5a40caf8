// RMSprop, torch.optim.RMSprop single-tensor semantics (spec §4): eps outside the sqrt, no
// bias correction; centered and momentum variants.

struct Scalars {
    alpha: f32,             // F(alpha)
    one_minus_alpha: f32,   // F(1 - alpha)
    eps: f32,               // F(eps)
    neg_lr: f32,            // F(-lr)
    momentum: f32,          // F(momentum)
    weight_decay: f32,      // F(weight_decay)
}

override CENTERED: bool = false;
override MOMENTUM: bool = false;

// Element i (in units of V) of one step; `main` (shaders/elementwise.wgsl) calls it.
fn update(i: u32, s: Scalars) {
    let param = load_p(i);
    let d = direction(grad(i), param, s.weight_decay);
    let sq = fma(s.one_minus_alpha * d, d, load_square_avg(i) * s.alpha);
    store_square_avg(i, sq);
    var avg: V;
    if CENTERED {
        let ga = lerp_torch(load_grad_avg(i), d, s.one_minus_alpha);
        store_grad_avg(i, ga);
        avg = sqrt(fma(-ga, ga, sq));                         // addcmul(ga, ga, value=-1): no clamp
    } else {
        avg = sqrt(sq);
    }
    avg = avg + s.eps;
    if MOMENTUM {
        let buf = load_momentum_buffer(i) * s.momentum + d / avg;
        store_momentum_buffer(i, buf);
        store_p(i, fma(buf, V(s.neg_lr), param));
    } else {
        store_p(i, param + (s.neg_lr * d) / avg);
    }
}
