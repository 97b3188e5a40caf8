// Adan, as the authors' package (sail-sg/Adan adan.py, `_single_tensor_adan`): Nesterov
// momentum through the gradient difference, four state tensors.

struct Scalars {
    beta1: f32,                  // F(beta1)
    one_minus_beta1: f32,        // F(1 - beta1)
    beta2: f32,                  // F(beta2)
    one_minus_beta2: f32,        // F(1 - beta2)
    beta3: f32,                  // F(beta3)
    one_minus_beta3: f32,        // F(1 - beta3)
    bias_correction3_sqrt: f32,  // F(math.sqrt(1 - beta3^t))
    eps: f32,                    // F(eps)
    neg_step_size: f32,          // F(-lr / (1 - beta1^t))
    neg_step_size_diff: f32,     // F(-lr * beta2 / (1 - beta2^t))
    decay: f32,                  // F(1 + lr * wd) (divides), or with no_prox F(1 - lr * wd) (multiplies)
    first: u32,                  // 1 on step 1: the previous gradient is this one
}

override NO_PROX: bool = false;

// Element i (in units of V) of one step; `main` (shaders/elementwise.wgsl) calls it.
fn update(i: u32, s: Scalars) {
    let gr = grad(i);
    var neg = load_neg_pre_grad(i);
    if s.first != 0u {
        neg = -gr;                                                      // neg_pre_grad = -grad on step 1
    }
    let diff = neg + gr;                                                // neg_grad_or_diff.add_(grad)
    let m = fma(gr, V(s.one_minus_beta1), load_exp_avg(i) * s.beta1);
    let d = fma(diff, V(s.one_minus_beta2), load_exp_avg_diff(i) * s.beta2);
    let x = diff * s.beta2 + gr;                                        // mul_(beta2).add_(grad)
    let n = fma(s.one_minus_beta3 * x, x, load_exp_avg_sq(i) * s.beta3);     // addcmul_(x, x, 1 - beta3)
    store_exp_avg(i, m);
    store_exp_avg_diff(i, d);
    store_exp_avg_sq(i, n);
    store_neg_pre_grad(i, -gr);
    let denom = sqrt(n) / s.bias_correction3_sqrt + s.eps;
    var param = load_p(i);
    if NO_PROX && WEIGHT_DECAY {
        param = param * s.decay;
    }
    param = param + (s.neg_step_size * m) / denom;
    param = param + (s.neg_step_size_diff * d) / denom;
    if !NO_PROX && WEIGHT_DECAY {
        param = param / s.decay;                                         // div_(1 + lr * wd)
    }
    store_p(i, param);
}
