// LARS (You et al., 2017), as optax.lars: the weight-decayed gradient scaled per tensor by
// trust_coefficient · ‖p‖ / (‖u‖ + eps), then the learning rate, then momentum (optax's
// trace). Two stages: `reduce_update` returns (p², u²); `update` applies.

struct Scalars {
    weight_decay: f32,       // F(weight_decay)
    trust_coefficient: f32,  // F(trust_coefficient)
    eps: f32,                // F(eps)
    neg_lr: f32,             // F(-lr)
    momentum: f32,           // F(momentum)
}

override TRUST_RATIO: bool = true;
override NESTEROV: bool = false;

// u = g + wd * p (optax's add_decayed_weights).
fn lars_direction(i: u32, s: Scalars) -> V {
    if WEIGHT_DECAY {
        return fma(V(s.weight_decay), load_p(i), grad(i));
    }
    return grad(i);
}

// Stage 1: this element's terms of ‖p‖² and ‖u‖² (nothing is written).
fn reduce_update(i: u32, s: Scalars) -> vec4<f32> {
    let u = lars_direction(i, s);
    let x = load_p(i);
    return vec4<f32>(hsum(x * x), hsum(u * u), 0.0, 0.0);
}

// Stage 2: the scaled update through the momentum trace.
fn update(i: u32, s: Scalars) {
    var trust = 1.0;
    if TRUST_RATIO {
        let sums = reduced();
        let param_norm = sqrt(sums.x);
        let update_norm = sqrt(sums.y);
        if param_norm > 0.0 && update_norm > 0.0 {
            trust = s.trust_coefficient * param_norm / (update_norm + s.eps);
        }
    }
    let u = lars_direction(i, s) * trust * s.neg_lr;
    let t = fma(V(s.momentum), load_momentum_buffer(i), u);     // trace = u + momentum * trace
    store_momentum_buffer(i, t);
    var step = t;
    if NESTEROV {
        step = fma(V(s.momentum), t, u);
    }
    store_p(i, load_p(i) + step);
}
