// Adam and AdamW, torch.optim.Adam single-tensor semantics (spec §2). AdamW is
// DECOUPLED = true; AMSGrad keeps the running maximum of the raw second moment.

struct Scalars {
    one_minus_beta1: f32,        // F(1 - beta1), the lerp weight
    beta2: f32,                  // F(beta2)
    one_minus_beta2: f32,        // F(1 - beta2)
    neg_step_size: f32,          // F(-lr / (1 - beta1^t))
    bias_correction2_sqrt: f32,  // F(sqrt(1 - beta2^t))
    eps: f32,                    // F(eps)
    weight_decay: f32,           // F(weight_decay), L2 form
    decay: f32,                  // F(1 - lr * weight_decay), decoupled form
}

override AMSGRAD: bool = false;

@group(1) @binding(0) var<storage, read_write> p: array<V>;
@group(1) @binding(1) var<storage, read_write> g: array<V>;  // read_write: may share a buffer with p
@group(1) @binding(2) var<storage, read_write> exp_avg: array<V>;
@group(1) @binding(3) var<storage, read_write> exp_avg_sq: array<V>;
@group(1) @binding(4) var<storage, read_write> max_exp_avg_sq: array<V>;

// Element i (in units of V) of one step; `main` (shaders/elementwise.wgsl) calls it.
fn update(i: u32, s: Scalars) {
    let mo = adam_moments(grad(i), p[i], exp_avg[i], exp_avg_sq[i], s.decay, s.weight_decay, s.one_minus_beta1,
                          s.beta2, s.one_minus_beta2);
    let m = mo.m;
    let v = mo.v;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    var second = v;
    if AMSGRAD {
        second = nan_max(max_exp_avg_sq[i], v);
        max_exp_avg_sq[i] = second;
    }
    let denom = sqrt(second) / s.bias_correction2_sqrt + s.eps;
    p[i] = mo.param + (s.neg_step_size * m) / denom;              // addcdiv_(m, denom, value=-step_size)
}
