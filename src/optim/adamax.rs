//! Adamax, as torch.optim.Adamax.

use super::{
    Kernel, Optimizer, ScalarBlock, StateSlices, StateSlot, check_adam_like, common_methods, direction, each, flag,
    lerp, nan_max, pack, setters, state_format_methods, with_state_format,
};
use crate::error::Result;

/// Adamax, torch.optim.Adamax (single-tensor path): Adam with the infinity norm.
///
/// ```text
/// t = t + 1;  g = maximize ? -grad : grad;  g = g + weight_decay * p
/// m = lerp(m, g, 1 - beta1)
/// u = max(beta2 * u, |g| + eps)
/// p = p - (lr / (1 - beta1^t)) * m / u
/// ```
/// eps sits inside the maximum, as torch and optax do (the paper has none). State:
/// `exp_avg`, `exp_inf`. Kingma & Ba (2015), §7.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Adamax {
    /// Learning rate (default 2e-3).
    pub lr: f64,
    /// Coefficients of the running average and the infinity norm (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added inside the maximum (default 1e-8).
    pub eps: f64,
    /// L2 penalty (default 0).
    pub weight_decay: f64,
    /// Maximize the objective (default false).
    pub maximize: bool,
    /// The format the state is kept in (default f32; bf16 or f16 halve its memory, 8-bit
    /// blocks quarter it: see [`crate::ElementFormat`]; the arithmetic stays f32).
    #[serde(skip_serializing_if = "super::is_f32")]
    pub state_format: crate::ElementFormat,
}

impl Default for Adamax {
    fn default() -> Self {
        Adamax {
            lr: 2e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            maximize: false,
            state_format: crate::ElementFormat::F32,
        }
    }
}

impl Adamax {
    /// With learning rate `lr` and torch's other defaults.
    pub fn new(lr: f64) -> Self {
        Adamax { lr, ..Self::default() }
    }
    /// Sets `betas`.
    pub fn with_betas(self, beta1: f64, beta2: f64) -> Self {
        Adamax { betas: (beta1, beta2), ..self }
    }
}
setters!(Adamax { with_eps => eps: f64, with_weight_decay => weight_decay: f64, with_maximize => maximize: bool });

static KERNEL: Kernel = Kernel {
    family: "adamax",
    source: include_str!("../../shaders/adamax.wgsl"),
    state: &[
        StateSlot { role: "m", torch_name: "exp_avg", signed: true },
        StateSlot { role: "u", torch_name: "exp_inf", signed: false },
    ],
    // L2 fma (2), lerp (3), mul (1), + eps (1), mul (1), div (3), add (1).
    scalar_size: size_of::<Scalars>(),
    step_error_budget: 12.0,
    stages: crate::step::ELEMENTWISE,
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Scalars {
    one_minus_beta1: f32,
    beta2: f32,
    eps: f32,
    neg_clr: f32,
    weight_decay: f32,
}

impl Adamax {
    fn host_scalars(&self, step: u64) -> Scalars {
        let (b1, b2) = self.betas;
        Scalars {
            one_minus_beta1: (1.0 - b1) as f32,
            beta2: b2 as f32,
            eps: self.eps as f32,
            neg_clr: (-(self.lr / (1.0 - b1.powf(step as f64)))) as f32,
            weight_decay: self.weight_decay as f32,
        }
    }
}

impl Optimizer for Adamax {
    super::cycles_beta1!();
    state_format_methods!();
    common_methods!(KERNEL);
    fn name(&self) -> &'static str {
        "Adamax"
    }
    fn reference(&self) -> &'static str {
        "torch.optim.Adamax"
    }
    fn validate(&self) -> Result<()> {
        check_adam_like(self.name(), self.lr, self.eps, self.betas, self.weight_decay)
    }
    fn constants(&self) -> Vec<(&'static str, f64)> {
        vec![("MAXIMIZE", flag(self.maximize)), ("WEIGHT_DECAY", flag(self.weight_decay != 0.0))]
    }
    fn scalars(&self, step: u64) -> ScalarBlock {
        pack(&self.host_scalars(step))
    }
    /// The CPU definition of one element's update (`shaders/adamax.wgsl` is the GPU one).
    fn update_cpu(&self, step: u64, p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>) {
        crate::simd::dispatch!(Adamax, self.update_elements(step, p, g, state))
    }
}

impl Adamax {
    /// The update itself, inlined into both versions [`crate::simd::dispatch`] compiles.
    #[inline(always)]
    pub(crate) fn update_elements(&self, step: u64, p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>) {
        let s = self.host_scalars(step);
        let maximize = self.maximize;
        each(p, g, state, move |p, grad, [m, u]| {
            let d = direction(maximize, s.weight_decay, grad, *p);
            *m = lerp(*m, d, s.one_minus_beta1);
            *u = nan_max(*u * s.beta2, d.abs() + s.eps);
            *p += (s.neg_clr * *m) / *u;
        });
    }
}

with_state_format!(Adamax);
