//! Adagrad, as torch.optim.Adagrad.

use super::{
    Kernel, Optimizer, ScalarBlock, StateSlices, StateSlot, check_lr, check_non_negative, common_methods, direction,
    each, flag, pack, setters, state_format_methods, with_state_format,
};
use crate::error::Result;

/// Adagrad, torch.optim.Adagrad (single-tensor path, dense gradients).
///
/// ```text
/// t = t + 1;  g = maximize ? -grad : grad;  g = g + weight_decay * p
/// sum = sum + g * g
/// p = p - (lr / (1 + (t - 1) * lr_decay)) * g / (sqrt(sum) + eps)
/// ```
/// State: `sum`, starting at `initial_accumulator_value`. Duchi, Hazan & Singer (2011).
/// optax's `adagrad` puts eps inside the square root and starts the sum at 0.1.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Adagrad {
    /// Learning rate (default 1e-2).
    pub lr: f64,
    /// Learning-rate decay per step (default 0).
    pub lr_decay: f64,
    /// L2 penalty (default 0).
    pub weight_decay: f64,
    /// Starting value of the sum of squares (default 0).
    pub initial_accumulator_value: f64,
    /// Added to the denominator (default 1e-10).
    pub eps: f64,
    /// Maximize the objective (default false).
    pub maximize: bool,
    /// The format the state is kept in (default f32; bf16 or f16 halve its memory: each
    /// element is stored to nearest even after every update, the arithmetic staying f32).
    #[serde(skip_serializing_if = "super::is_f32")]
    pub state_format: crate::ElementFormat,
}

impl Default for Adagrad {
    fn default() -> Self {
        Adagrad {
            lr: 1e-2,
            lr_decay: 0.0,
            weight_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
            maximize: false,
            state_format: crate::ElementFormat::F32,
        }
    }
}

impl Adagrad {
    /// With learning rate `lr` and torch's other defaults.
    pub fn new(lr: f64) -> Self {
        Adagrad { lr, ..Self::default() }
    }
}
setters!(Adagrad {
    with_lr_decay => lr_decay: f64,
    with_weight_decay => weight_decay: f64,
    with_initial_accumulator_value => initial_accumulator_value: f64,
    with_eps => eps: f64,
    with_maximize => maximize: bool,
});

static KERNEL: Kernel = Kernel {
    family: "adagrad",
    source: include_str!("../../shaders/adagrad.wgsl"),
    state: &[StateSlot { role: "sum", torch_name: "sum", signed: false }],
    // L2 fma (2), sum mul + add (2), sqrt (5), + eps (1), mul (1), div (3), add (1).
    scalar_size: size_of::<Scalars>(),
    step_error_budget: 15.0,
    stages: crate::step::ELEMENTWISE,
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Scalars {
    neg_clr: f32,
    weight_decay: f32,
    eps: f32,
}

impl Adagrad {
    fn host_scalars(&self, step: u64) -> Scalars {
        let clr = self.lr / (1.0 + (step as f64 - 1.0) * self.lr_decay);
        Scalars { neg_clr: (-clr) as f32, weight_decay: self.weight_decay as f32, eps: self.eps as f32 }
    }
}

impl Optimizer for Adagrad {
    state_format_methods!();
    common_methods!(KERNEL);
    fn name(&self) -> &'static str {
        "Adagrad"
    }
    fn reference(&self) -> &'static str {
        "torch.optim.Adagrad"
    }
    fn validate(&self) -> Result<()> {
        let n = self.name();
        check_lr(n, self.lr)?;
        check_non_negative(n, "lr_decay", self.lr_decay)?;
        check_non_negative(n, "weight_decay", self.weight_decay)?;
        check_non_negative(n, "initial_accumulator_value", self.initial_accumulator_value)?;
        check_non_negative(n, "epsilon", self.eps)
    }
    fn state_init(&self, _slot: usize) -> f32 {
        self.initial_accumulator_value as f32
    }
    fn constants(&self) -> Vec<(&'static str, f64)> {
        vec![("MAXIMIZE", flag(self.maximize)), ("WEIGHT_DECAY", flag(self.weight_decay != 0.0))]
    }
    fn scalars(&self, step: u64) -> ScalarBlock {
        pack(&self.host_scalars(step))
    }
    /// The CPU definition of one element's update (`shaders/adagrad.wgsl` is the GPU one).
    fn update_cpu(&self, step: u64, p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>) {
        crate::simd::dispatch!(Adagrad, self.update_elements(step, p, g, state))
    }
}

impl Adagrad {
    /// The update itself, inlined into both versions [`crate::simd::dispatch`] compiles.
    #[inline(always)]
    pub(crate) fn update_elements(&self, step: u64, p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>) {
        let s = self.host_scalars(step);
        let maximize = self.maximize;
        each(p, g, state, move |p, grad, [sum]| {
            let d = direction(maximize, s.weight_decay, grad, *p);
            *sum = d.mul_add(d, *sum);
            *p += (s.neg_clr * d) / (sum.sqrt() + s.eps);
        });
    }
}

with_state_format!(Adagrad);
