// Muon, torch.optim.Muon (torch/optim/_muon.py): the element-wise parts of its step, around
// the Newton–Schulz products. The GPU engine does not record matrix-product stages yet (it
// refuses Muon with an error); the CPU definition is src/optim/muon.rs.

struct Scalars {
    one_minus_momentum: f32,  // F(1 - momentum)
    momentum: f32,            // F(momentum)
    decay: f32,               // F(1 - lr * weight_decay), with the unadjusted lr
    eps: f32,                 // F(eps), the floor of the Frobenius norm
    a: f32,                   // the quintic's coefficients, F(a), F(b), F(c)
    b: f32,
    c: f32,
}

override NESTEROV: bool = true;

// The momentum buffer's update and the matrix Newton–Schulz starts from:
// buf.lerp_(grad, 1 - momentum); update = grad.lerp(buf, momentum) if nesterov else buf.
fn momentum_update(g: f32, buf: ptr<function, f32>, s: Scalars) -> f32 {
    *buf = lerp_torch1(*buf, g, s.one_minus_momentum);
    if NESTEROV {
        return lerp_torch1(g, *buf, s.momentum);
    }
    return *buf;
}

// param.mul_(1 - lr * weight_decay); param.add_(o, alpha=-adjusted_lr).
fn apply_update(p: f32, o: f32, neg_adjusted_lr: f32, s: Scalars) -> f32 {
    return fma(o, neg_adjusted_lr, p * s.decay);
}

// torch's CPU lerp on one f32 (src/optim/mod.rs `lerp`).
fn lerp_torch1(a: f32, b: f32, w: f32) -> f32 {
    if abs(w) < 0.5 {
        return fma(w, b - a, a);
    }
    return fma(w - 1.0, b - a, b);
}
