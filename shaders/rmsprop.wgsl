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

@group(1) @binding(0) var<storage, read_write> p: array<V>;
@group(1) @binding(1) var<storage, read_write> g: array<V>;
@group(1) @binding(2) var<storage, read_write> square_avg: array<V>;
@group(1) @binding(3) var<storage, read_write> momentum_buffer: array<V>;
@group(1) @binding(4) var<storage, read_write> grad_avg: array<V>;

// Element i (in units of V) of one step; `main` (shaders/elementwise.wgsl) calls it.
fn update(i: u32, s: Scalars) {
    let param = p[i];
    let d = direction(grad(i), param, s.weight_decay);
    let sq = fma(s.one_minus_alpha * d, d, square_avg[i] * s.alpha);
    square_avg[i] = sq;
    var avg: V;
    if CENTERED {
        let ga = lerp_torch(grad_avg[i], d, s.one_minus_alpha);
        grad_avg[i] = ga;
        avg = sqrt(fma(-ga, ga, sq));                         // addcmul(ga, ga, value=-1): no clamp
    } else {
        avg = sqrt(sq);
    }
    avg = avg + s.eps;
    if MOMENTUM {
        let buf = momentum_buffer[i] * s.momentum + d / avg;
        momentum_buffer[i] = buf;
        p[i] = fma(buf, V(s.neg_lr), param);
    } else {
        p[i] = param + (s.neg_lr * d) / avg;
    }
}
