//! AdaBelief, as the authors' release (adabelief-pytorch 0.2.1).

use super::{
    Kernel, Optimizer, ScalarBlock, StateSlices, StateSlot, check_adam_like, common_methods, each, flag, nan_max, pack,
    setters, state_format_methods, with_state_format,
};
use crate::error::Result;

/// AdaBelief (Zhuang et al., 2020), as the authors' PyTorch package adabelief-pytorch 0.2.1;
/// not in torch.optim.
///
/// ```text
/// weight_decouple: p = p * (1 - lr*wd)   (fixed_decay: p * (1 - wd))   else g = g + wd * p
/// m = beta1 * m + (1 - beta1) * g
/// s = beta2 * s + (1 - beta2) * (g - m)² + eps         # eps accumulates in the state
/// amsgrad: s_max = max(s_max, s)
/// rectify = false: p = p - lr / (1 - beta1^t) * m / (sqrt(s or s_max) / sqrt(1 - beta2^t) + eps)
/// rectify = true (RAdam's rule, N_t >= 5): p = p - lr * step_t * m / (sqrt(s) + eps)
///     N_t < 5: degenerated_to_sgd ? p = p - lr / (1 - beta1^t) * m : no change
/// ```
/// The package's defaults: eps 1e-16, weight_decouple, rectify and degenerated_to_sgd on.
/// It has no `maximize`. Where its L2 form adds `wd * p` into `p.grad` in place, this crate
/// leaves the caller's gradient untouched. State: `exp_avg`, `exp_avg_var`,
/// `max_exp_avg_var` (AMSGrad). With `rectify = false` it is the paper's Algorithm 2.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct AdaBelief {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// Coefficients of the running averages (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to the stored variance every step and to the denominator (default 1e-16).
    pub eps: f64,
    /// Weight decay (default 0).
    pub weight_decay: f64,
    /// AMSGrad variant (default false).
    pub amsgrad: bool,
    /// Decoupled weight decay (default true).
    pub weight_decouple: bool,
    /// Decay by `1 - weight_decay`, not `1 - lr * weight_decay` (default false).
    pub fixed_decay: bool,
    /// RAdam-style rectification (default true).
    pub rectify: bool,
    /// While rectification is off (N_t < 5), take an SGD-with-momentum step (default true).
    pub degenerated_to_sgd: bool,
    /// The format the state is kept in (default f32; bf16 or f16 halve its memory, 8-bit
    /// blocks quarter it: see [`crate::ElementFormat`]; the arithmetic stays f32).
    #[serde(skip_serializing_if = "super::is_f32")]
    pub state_format: crate::ElementFormat,
}

impl Default for AdaBelief {
    fn default() -> Self {
        AdaBelief {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-16,
            weight_decay: 0.0,
            amsgrad: false,
            weight_decouple: true,
            fixed_decay: false,
            rectify: true,
            degenerated_to_sgd: true,
            state_format: crate::ElementFormat::F32,
        }
    }
}

impl AdaBelief {
    /// With learning rate `lr` and the package's other defaults.
    pub fn new(lr: f64) -> Self {
        AdaBelief { lr, ..Self::default() }
    }
    /// Sets `betas`.
    pub fn with_betas(self, beta1: f64, beta2: f64) -> Self {
        AdaBelief { betas: (beta1, beta2), ..self }
    }
}
setters!(AdaBelief {
    with_eps => eps: f64,
    with_weight_decay => weight_decay: f64,
    with_amsgrad => amsgrad: bool,
    with_weight_decouple => weight_decouple: bool,
    with_fixed_decay => fixed_decay: bool,
    with_rectify => rectify: bool,
    with_degenerated_to_sgd => degenerated_to_sgd: bool,
});

static KERNEL: Kernel = Kernel {
    family: "adabelief",
    source: include_str!("../../shaders/adabelief.wgsl"),
    state: &[
        StateSlot { role: "m", torch_name: "exp_avg", signed: true },
        StateSlot { role: "s", torch_name: "exp_avg_var", signed: false },
        StateSlot { role: "s_max", torch_name: "max_exp_avg_var", signed: false },
    ],
    // decay or L2 (2), m mul + fma (3), g - m (1), s three mul, two add (5), sqrt (5),
    // div (3), + eps (1), mul (1), div (3), add (1).
    scalar_size: size_of::<Scalars>(),
    step_error_budget: 25.0,
    stages: crate::step::ELEMENTWISE,
};

/// Which update the step takes (uniform over the tensor).
const ADAM_LIKE: u32 = 0;
const RECTIFIED: u32 = 1;
const SGD_LIKE: u32 = 2;
const NO_UPDATE: u32 = 3;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Scalars {
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    eps: f32,
    weight_decay: f32,
    decay: f32,
    bias_correction2_sqrt: f32,
    step: f32,
    mode: u32,
}

impl AdaBelief {
    /// The package's host arithmetic, operation for operation.
    fn host_scalars(&self, step: u64) -> Scalars {
        let (b1, b2) = self.betas;
        let t = step as f64;
        let bias_correction1 = 1.0 - b1.powf(t);
        let bias_correction2 = 1.0 - b2.powf(t);
        let (mode, step_size) = if !self.rectify {
            (ADAM_LIKE, -(self.lr / bias_correction1))
        } else {
            let beta2_t = b2.powf(t);
            let n_max = 2.0 / (1.0 - b2) - 1.0;
            let n = n_max - 2.0 * t * beta2_t / (1.0 - beta2_t);
            if n >= 5.0 {
                let r = (1.0 - beta2_t) * (n - 4.0) / (n_max - 4.0) * (n - 2.0) / n * n_max / (n_max - 2.0);
                (RECTIFIED, -(r.sqrt() / (1.0 - b1.powf(t))) * self.lr)
            } else if self.degenerated_to_sgd {
                (SGD_LIKE, -(1.0 / (1.0 - b1.powf(t))) * self.lr)
            } else {
                (NO_UPDATE, 0.0)
            }
        };
        let decay = if self.fixed_decay { 1.0 - self.weight_decay } else { 1.0 - self.lr * self.weight_decay };
        Scalars {
            beta1: b1 as f32,
            one_minus_beta1: (1.0 - b1) as f32,
            beta2: b2 as f32,
            one_minus_beta2: (1.0 - b2) as f32,
            eps: self.eps as f32,
            weight_decay: self.weight_decay as f32,
            decay: decay as f32,
            bias_correction2_sqrt: bias_correction2.sqrt() as f32,
            step: step_size as f32,
            mode,
        }
    }
}

impl Optimizer for AdaBelief {
    super::cycles_beta1!();
    state_format_methods!();
    common_methods!(KERNEL);
    fn name(&self) -> &'static str {
        "AdaBelief"
    }
    fn reference(&self) -> &'static str {
        "adabelief-pytorch 0.2.1 AdaBelief"
    }
    fn validate(&self) -> Result<()> {
        check_adam_like(self.name(), self.lr, self.eps, self.betas, self.weight_decay)
    }
    fn uses_state(&self, slot: usize) -> bool {
        slot < 2 || (slot == 2 && self.amsgrad)
    }
    fn constants(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("WEIGHT_DECAY", flag(self.weight_decay != 0.0)),
            ("WEIGHT_DECOUPLE", flag(self.weight_decouple)),
            ("AMSGRAD", flag(self.amsgrad)),
        ]
    }
    fn scalars(&self, step: u64) -> ScalarBlock {
        pack(&self.host_scalars(step))
    }
    /// The CPU definition of one element's update (`shaders/adabelief.wgsl` is the GPU one).
    fn update_cpu(&self, step: u64, p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>) {
        crate::simd::dispatch!(AdaBelief, self.update_elements(step, p, g, state))
    }
}

impl AdaBelief {
    /// The update itself, inlined into both versions [`crate::simd::dispatch`] compiles.
    #[inline(always)]
    pub(crate) fn update_elements(&self, step: u64, p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>) {
        let s = self.host_scalars(step);
        let (decouple, l2, amsgrad) = (self.weight_decouple, self.weight_decay != 0.0, self.amsgrad);
        // One definition of the element's update; AMSGrad's `var_max` is a slot of its own
        // loop (`Some`) or absent (`None`), decided once per call, not per element.
        let update = move |p: &mut f32, grad: f32, m: &mut f32, var: &mut f32, var_max: Option<&mut f32>| {
            let mut param = *p;
            let mut d = grad;
            if decouple {
                param *= s.decay;
            } else if l2 {
                d = param.mul_add(s.weight_decay, d);
            }
            *m = d.mul_add(s.one_minus_beta1, *m * s.beta1);
            let r = d - *m;
            *var = (s.one_minus_beta2 * r).mul_add(r, *var * s.beta2) + s.eps;
            let second = match var_max {
                Some(var_max) => {
                    *var_max = nan_max(*var_max, *var);
                    *var_max
                }
                None => *var,
            };
            *p = match s.mode {
                ADAM_LIKE => param + (s.step * *m) / (second.sqrt() / s.bias_correction2_sqrt + s.eps),
                RECTIFIED => param + (s.step * *m) / (var.sqrt() + s.eps),
                SGD_LIKE => m.mul_add(s.step, param),
                _ => param,
            };
        };
        if amsgrad {
            each(p, g, state, move |p, grad, [m, var, var_max]| update(p, grad, m, var, Some(var_max)));
        } else {
            each(p, g, state, move |p, grad, [m, var]| update(p, grad, m, var, None));
        }
    }
}

with_state_format!(AdaBelief);
