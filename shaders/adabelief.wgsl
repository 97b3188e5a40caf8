// AdaBelief, as the authors' adabelief-pytorch 0.2.1 (spec §10): the second moment tracks
// (g - m)², eps is added to the stored state every step, rectification as in RAdam.

struct Scalars {
    beta1: f32,                  // F(beta1)
    one_minus_beta1: f32,        // F(1 - beta1)
    beta2: f32,                  // F(beta2)
    one_minus_beta2: f32,        // F(1 - beta2)
    eps: f32,                    // F(eps)
    weight_decay: f32,           // F(weight_decay), L2 form
    decay: f32,                  // F(1 - lr * wd) or, with fixed_decay, F(1 - wd)
    bias_correction2_sqrt: f32,  // F(math.sqrt(1 - beta2^t))
    step: f32,                   // F(-lr * step size) of this step's branch
    mode: u32,                   // 0 Adam-like, 1 rectified, 2 SGD-like, 3 no parameter update
}

override WEIGHT_DECOUPLE: bool = true;
override AMSGRAD: bool = false;

// Element i (in units of V) of one step; `main` (shaders/elementwise.wgsl) calls it.
fn update(i: u32, s: Scalars) {
    var param = load_p(i);
    var d = grad(i);
    if WEIGHT_DECOUPLE {
        param = param * s.decay;                               // runs even with wd = 0 (× 1)
    } else if WEIGHT_DECAY {
        d = fma(param, V(s.weight_decay), d);
    }
    let m = fma(d, V(s.one_minus_beta1), load_exp_avg(i) * s.beta1);  // mul_(b1).add_(g, alpha=1-b1)
    let r = d - m;
    let belief = fma(s.one_minus_beta2 * r, r, load_exp_avg_var(i) * s.beta2) + s.eps;  // eps stored
    store_exp_avg(i, m);
    store_exp_avg_var(i, belief);
    var second = belief;
    if AMSGRAD {
        second = nan_max(load_max_exp_avg_var(i), belief);
        store_max_exp_avg_var(i, second);
    }
    switch s.mode {
        case 0u: {
            store_p(i, param + (s.step * m) / (sqrt(second) / s.bias_correction2_sqrt + s.eps));
        }
        case 1u: {
            store_p(i, param + (s.step * m) / (sqrt(belief) + s.eps));  // the raw variance, as the authors
        }
        case 2u: {
            store_p(i, fma(m, V(s.step), param));
        }
        default: {
            store_p(i, param);
        }
    }
}
