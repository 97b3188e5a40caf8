// LAMB (You et al., 2020), as optax.lamb: Adam's direction plus decoupled weight decay,
// scaled per tensor by the trust ratio ‖p‖ / ‖u‖. Two stages: `reduce_update` updates the
// moments and returns (p², u²) for the per-tensor norms; `update` recomputes u from the
// stored moments (the same bits) and applies it with this tensor's ratio.

struct Scalars {
    beta1: f32,                // F(beta1)
    one_minus_beta1: f32,      // F(1 - beta1)
    beta2: f32,                // F(beta2)
    one_minus_beta2: f32,      // F(1 - beta2)
    bias_correction1: f32,     // F(1 - beta1^t), or 1 without bias correction
    bias_correction2: f32,     // F(1 - beta2^t), or 1
    eps: f32,                  // F(eps)
    weight_decay: f32,         // F(weight_decay)
    neg_lr: f32,               // F(-lr)
}

override TRUST_CLIP: bool = false;

// The update direction from the stored moments: Adam's, plus the decay term.
fn lamb_direction(i: u32, s: Scalars) -> V {
    let m_hat = load_exp_avg(i) / s.bias_correction1;
    let v_hat = load_exp_avg_sq(i) / s.bias_correction2;
    var u = m_hat / (sqrt(v_hat) + s.eps);
    if WEIGHT_DECAY {
        u = fma(V(s.weight_decay), load_p(i), u);
    }
    return u;
}

// Stage 1: the moments, and this element's terms of ‖p‖² and ‖u‖².
fn reduce_update(i: u32, s: Scalars) -> vec4<f32> {
    let gr = grad(i);
    store_exp_avg(i, fma(gr, V(s.one_minus_beta1), load_exp_avg(i) * s.beta1));
    store_exp_avg_sq(i, fma(s.one_minus_beta2 * gr, gr, load_exp_avg_sq(i) * s.beta2));
    let u = lamb_direction(i, s);
    let x = load_p(i);
    return vec4<f32>(hsum(x * x), hsum(u * u), 0.0, 0.0);
}

// Stage 2: p = p - lr * trust * u, the ratio 1 where either norm is 0.
fn update(i: u32, s: Scalars) {
    let sums = reduced();
    let param_norm = sqrt(sums.x);
    let update_norm = sqrt(sums.y);
    var trust = 1.0;
    if param_norm > 0.0 && update_norm > 0.0 {
        trust = param_norm / update_norm;
    }
    if TRUST_CLIP {
        trust = min(trust, 1.0);
    }
    store_p(i, fma(lamb_direction(i, s), V(s.neg_lr * trust), load_p(i)));
}
