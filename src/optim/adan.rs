//! Adan, as the authors' release (sail-sg/Adan, `adan.py`).

use super::{
    Kernel, Optimizer, ScalarBlock, StateSlices, StateSlot, check, check_lr, check_non_negative, common_methods, each,
    flag, pack, py, setters, state_format_methods, with_state_format,
};
use crate::error::Result;

/// Adan (Xie et al., 2022), as the authors' PyTorch optimizer (sail-sg/Adan `adan.py`,
/// single-tensor path); not in torch.optim.
///
/// ```text
/// step 1: neg_pre_grad = -g                     # so the first difference is 0
/// diff = g + neg_pre_grad                       # g_t - g_{t-1}
/// m = beta1 * m + (1 - beta1) * g               # exp_avg
/// d = beta2 * d + (1 - beta2) * diff            # exp_avg_diff
/// n = beta3 * n + (1 - beta3) * (g + beta2 * diff)²    # exp_avg_sq
/// denom = sqrt(n) / sqrt(1 - beta3^t) + eps
/// no_prox = false: p = (p - lr/(1-beta1^t) * m/denom - lr*beta2/(1-beta2^t) * d/denom) / (1 + lr*wd)
/// no_prox = true:  p = p * (1 - lr*wd) - lr/(1-beta1^t) * m/denom - lr*beta2/(1-beta2^t) * d/denom
/// neg_pre_grad = -g
/// ```
/// The authors' defaults: lr 1e-3, betas (0.98, 0.92, 0.99) as decay rates, eps 1e-8,
/// weight decay 0, no_prox false. Their `max_grad_norm` clipping is this crate's gradient
/// control (`GradControl`, whose norm adds 1e-6 where theirs adds eps). optax's `adan`
/// weights the difference by `1 - b2` where the authors (and the paper, whose β2 is
/// `1 - b2`) weight it by `b2`: a different optimizer for the same name; this one is the
/// authors'. State: `exp_avg`, `exp_avg_sq`, `exp_avg_diff`, `neg_pre_grad` (minus the
/// previous gradient, as the authors store it).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Adan {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// Decay rates of the gradient, difference and squared averages (default (0.98, 0.92, 0.99)).
    pub betas: (f64, f64, f64),
    /// Added to the denominator (default 1e-8).
    pub eps: f64,
    /// Decoupled weight decay (default 0).
    pub weight_decay: f64,
    /// Decay by multiplying with `1 - lr * wd` before the update instead of dividing by
    /// `1 + lr * wd` after it (default false).
    pub no_prox: bool,
    /// The format the state is kept in (default f32; bf16 or f16 halve its memory, 8-bit
    /// blocks quarter it: see [`crate::ElementFormat`]; the arithmetic stays f32).
    #[serde(skip_serializing_if = "super::is_f32")]
    pub state_format: crate::ElementFormat,
}

impl Default for Adan {
    fn default() -> Self {
        Adan {
            lr: 1e-3,
            betas: (0.98, 0.92, 0.99),
            eps: 1e-8,
            weight_decay: 0.0,
            no_prox: false,
            state_format: crate::ElementFormat::F32,
        }
    }
}

impl Adan {
    /// With learning rate `lr` and the authors' other defaults.
    pub fn new(lr: f64) -> Self {
        Adan { lr, ..Self::default() }
    }
    /// Sets `betas`.
    pub fn with_betas(self, beta1: f64, beta2: f64, beta3: f64) -> Self {
        Adan { betas: (beta1, beta2, beta3), ..self }
    }
}
setters!(Adan {
    with_eps => eps: f64,
    with_weight_decay => weight_decay: f64,
    with_no_prox => no_prox: bool,
});

static KERNEL: Kernel = Kernel {
    family: "adan",
    source: include_str!("../../shaders/adan.wgsl"),
    state: &[
        StateSlot { role: "m", torch_name: "exp_avg", signed: true },
        StateSlot { role: "n", torch_name: "exp_avg_sq", signed: false },
        StateSlot { role: "d", torch_name: "exp_avg_diff", signed: true },
        StateSlot { role: "neg_prev_grad", torch_name: "neg_pre_grad", signed: true },
    ],
    // diff add (1), m mul + fma (3), d mul + fma (3), x mul + add (2), n three mul, an add
    // (4), sqrt (5), `/ bc3` (3), `+ eps` (1), two terms of mul (1), div (3), add (1),
    // the decay's mul or div (3).
    scalar_size: size_of::<Scalars>(),
    step_error_budget: 35.0,
    stages: crate::step::ELEMENTWISE,
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Scalars {
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    beta3: f32,
    one_minus_beta3: f32,
    bias_correction3_sqrt: f32,
    eps: f32,
    neg_step_size: f32,
    neg_step_size_diff: f32,
    decay: f32,
    first: u32,
}

impl Adan {
    /// The package's host arithmetic: f64 (`beta ** step`), one rounding to f32 per scalar.
    fn host_scalars(&self, step: u64) -> Scalars {
        let (b1, b2, b3) = self.betas;
        let t = step as f64;
        let bias_correction1 = 1.0 - b1.powf(t);
        let bias_correction2 = 1.0 - b2.powf(t);
        let bias_correction3 = 1.0 - b3.powf(t);
        let lr_wd = self.lr * self.weight_decay;
        Scalars {
            beta1: b1 as f32,
            one_minus_beta1: (1.0 - b1) as f32,
            beta2: b2 as f32,
            one_minus_beta2: (1.0 - b2) as f32,
            beta3: b3 as f32,
            one_minus_beta3: (1.0 - b3) as f32,
            bias_correction3_sqrt: bias_correction3.sqrt() as f32,
            eps: self.eps as f32,
            neg_step_size: (-(self.lr / bias_correction1)) as f32,
            neg_step_size_diff: (-(self.lr * b2 / bias_correction2)) as f32,
            decay: if self.no_prox { 1.0 - lr_wd } else { 1.0 + lr_wd } as f32,
            first: u32::from(step == 1),
        }
    }
}

impl Optimizer for Adan {
    super::cycles_beta1!();
    state_format_methods!();
    common_methods!(KERNEL);
    fn name(&self) -> &'static str {
        "Adan"
    }
    fn reference(&self) -> &'static str {
        "sail-sg/Adan adan.py Adan"
    }
    /// The package's checks and messages, in its order.
    fn validate(&self) -> Result<()> {
        let name = self.name();
        check_lr(name, self.lr)?;
        check_non_negative(name, "epsilon", self.eps)?;
        let (b1, b2, b3) = self.betas;
        for (i, b) in [b1, b2, b3].into_iter().enumerate() {
            check(name, (0.0..1.0).contains(&b), || format!("Invalid beta parameter at index {i}: {}", py(b)))?;
        }
        // The package does not check it; a negative decay would make the optimizer climb.
        check_non_negative(name, "weight_decay", self.weight_decay)
    }
    fn constants(&self) -> Vec<(&'static str, f64)> {
        vec![("WEIGHT_DECAY", flag(self.weight_decay != 0.0)), ("NO_PROX", flag(self.no_prox))]
    }
    fn scalars(&self, step: u64) -> ScalarBlock {
        pack(&self.host_scalars(step))
    }
    /// The CPU definition of one element's update (`shaders/adan.wgsl` is the GPU one).
    fn update_cpu(&self, step: u64, p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>) {
        crate::simd::dispatch!(Adan, self.update_elements(step, p, g, state))
    }
}

impl Adan {
    /// The update itself, inlined into both versions [`crate::simd::dispatch`] compiles.
    #[inline(always)]
    pub(crate) fn update_elements(&self, step: u64, p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>) {
        let s = self.host_scalars(step);
        let (decay, no_prox) = (self.weight_decay != 0.0, self.no_prox);
        each(p, g, state, move |p, grad, [m, n, d, neg]| {
            let prev = if s.first != 0 { -grad } else { *neg };
            let diff = prev + grad;
            *m = grad.mul_add(s.one_minus_beta1, *m * s.beta1);
            *d = diff.mul_add(s.one_minus_beta2, *d * s.beta2);
            let x = diff * s.beta2 + grad;
            *n = (s.one_minus_beta3 * x).mul_add(x, *n * s.beta3);
            *neg = -grad;
            let denom = n.sqrt() / s.bias_correction3_sqrt + s.eps;
            let mut param = *p;
            if no_prox && decay {
                param *= s.decay;
            }
            param += (s.neg_step_size * *m) / denom;
            param += (s.neg_step_size_diff * *d) / denom;
            if !no_prox && decay {
                param /= s.decay;
            }
            *p = param;
        });
    }
}

with_state_format!(Adan);
