//! Adadelta, as torch.optim.Adadelta.

use super::{
    Kernel, Optimizer, ScalarBlock, StateSlices, StateSlot, check, check_lr, check_non_negative, common_methods,
    direction, each, flag, pack, py, setters, state_format_methods, with_state_format,
};
use crate::error::Result;

/// Adadelta, torch.optim.Adadelta (single-tensor path).
///
/// ```text
/// g = maximize ? -grad : grad;  g = g + weight_decay * p
/// sq    = rho * sq + (1 - rho) * g²
/// delta = sqrt(acc + eps) / sqrt(sq + eps) * g
/// acc   = rho * acc + (1 - rho) * delta²
/// p     = p - lr * delta
/// ```
/// Zeiler (2012) with a learning rate (1.0 reproduces the paper). State: `square_avg`,
/// `acc_delta`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Adadelta {
    /// Learning rate (default 1.0).
    pub lr: f64,
    /// Decay of both running averages (default 0.9; 1.0 allowed).
    pub rho: f64,
    /// Inside both square roots (default 1e-6).
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

impl Default for Adadelta {
    fn default() -> Self {
        Adadelta {
            lr: 1.0,
            rho: 0.9,
            eps: 1e-6,
            weight_decay: 0.0,
            maximize: false,
            state_format: crate::ElementFormat::F32,
        }
    }
}

impl Adadelta {
    /// With learning rate `lr` and torch's other defaults.
    pub fn new(lr: f64) -> Self {
        Adadelta { lr, ..Self::default() }
    }
}
setters!(Adadelta {
    with_rho => rho: f64,
    with_eps => eps: f64,
    with_weight_decay => weight_decay: f64,
    with_maximize => maximize: bool,
});

static KERNEL: Kernel = Kernel {
    family: "adadelta",
    source: include_str!("../../shaders/adadelta.wgsl"),
    state: &[
        StateSlot { role: "square_avg", torch_name: "square_avg", signed: false },
        StateSlot { role: "acc_delta", torch_name: "acc_delta", signed: false },
    ],
    // L2 fma (2), sq (4), add + sqrt twice (12), div (3), mul (1), acc (4), fma (2).
    scalar_size: size_of::<Scalars>(),
    step_error_budget: 28.0,
    stages: crate::step::ELEMENTWISE,
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Scalars {
    rho: f32,
    one_minus_rho: f32,
    eps: f32,
    neg_lr: f32,
    weight_decay: f32,
}

impl Adadelta {
    fn host_scalars(&self) -> Scalars {
        Scalars {
            rho: self.rho as f32,
            one_minus_rho: (1.0 - self.rho) as f32,
            eps: self.eps as f32,
            neg_lr: (-self.lr) as f32,
            weight_decay: self.weight_decay as f32,
        }
    }
}

impl Optimizer for Adadelta {
    state_format_methods!();
    common_methods!(KERNEL);
    fn name(&self) -> &'static str {
        "Adadelta"
    }
    fn reference(&self) -> &'static str {
        "torch.optim.Adadelta"
    }
    fn validate(&self) -> Result<()> {
        let n = self.name();
        check_lr(n, self.lr)?;
        check(n, (0.0..=1.0).contains(&self.rho), || format!("Invalid rho value: {}", py(self.rho)))?;
        check_non_negative(n, "epsilon", self.eps)?;
        check_non_negative(n, "weight_decay", self.weight_decay)
    }
    fn constants(&self) -> Vec<(&'static str, f64)> {
        vec![("MAXIMIZE", flag(self.maximize)), ("WEIGHT_DECAY", flag(self.weight_decay != 0.0))]
    }
    fn scalars(&self, _step: u64) -> ScalarBlock {
        pack(&self.host_scalars())
    }
    /// The CPU definition of one element's update (`shaders/adadelta.wgsl` is the GPU one).
    fn update_cpu(&self, step: u64, p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>) {
        crate::simd::dispatch!(Adadelta, self.update_elements(step, p, g, state))
    }
}

impl Adadelta {
    /// The update itself, inlined into both versions [`crate::simd::dispatch`] compiles.
    #[inline(always)]
    pub(crate) fn update_elements(&self, _step: u64, p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>) {
        let s = self.host_scalars();
        let maximize = self.maximize;
        each(p, g, state, move |p, grad, [sq, acc]| {
            let d = direction(maximize, s.weight_decay, grad, *p);
            *sq = (s.one_minus_rho * d).mul_add(d, *sq * s.rho);
            let std = (*sq + s.eps).sqrt();
            let delta = ((*acc + s.eps).sqrt() / std) * d;
            *acc = (s.one_minus_rho * delta).mul_add(delta, *acc * s.rho);
            *p = delta.mul_add(s.neg_lr, *p);
        });
    }
}

with_state_format!(Adadelta);
