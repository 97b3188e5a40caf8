// Adam's first lines, shared by Adam, NAdam and RAdam: weight decay (decoupled, on the
// parameter; or L2, into the gradient), the signed direction, and both moments.

override DECOUPLED: bool = false;

struct Moments {
    param: V,  // the parameter after decoupled decay
    d: V,      // the direction: signed gradient plus the L2 term
    m: V,      // exp_avg = lerp(m, d, 1 - beta1)
    v: V,      // exp_avg_sq = beta2 * v + (1 - beta2) * d², addcmul contracted as torch
}

fn adam_moments(grad: V, param_in: V, m: V, v: V, decay: f32, weight_decay: f32,
                one_minus_beta1: f32, beta2: f32, one_minus_beta2: f32) -> Moments {
    var d = signed(grad);
    var param = param_in;
    if WEIGHT_DECAY {
        if DECOUPLED {
            param = param * decay;                        // p.mul_(1 - lr*wd)
        } else {
            d = fma(param, V(weight_decay), d);           // g.add(p, alpha=wd)
        }
    }
    let m_new = lerp_torch(m, d, one_minus_beta1);
    let v_new = fma(one_minus_beta2 * d, d, v * beta2);
    return Moments(param, d, m_new, v_new);
}
