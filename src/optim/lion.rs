//! Lion, as lion-pytorch 0.2.5.

use super::{
    Kernel, Optimizer, ScalarBlock, StateSlices, StateSlot, check, common_methods, each, pack, py, setters,
    state_format_methods, with_state_format,
};
use crate::error::Result;

/// Lion (Chen et al., 2023, Algorithm 2), as lion-pytorch 0.2.5; not in torch.optim.
///
/// ```text
/// p = p * (1 - lr * wd)                  # wd / initial_lr when decoupled_weight_decay
/// p = p - lr * sign(beta1 * m + (1 - beta1) * g)
/// m = beta2 * m + (1 - beta2) * g        # after the parameter update
/// ```
/// `sign(0) = 0`. No `maximize`. State: `exp_avg`. optax's `lion` defaults to weight decay
/// 1e-3 and adds `wd * p` to the update instead.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Lion {
    /// Learning rate (default 1e-4; must be > 0).
    pub lr: f64,
    /// Interpolation and momentum coefficients (default (0.9, 0.99), each in [0, 1]).
    pub betas: (f64, f64),
    /// Weight decay (default 0).
    pub weight_decay: f64,
    /// Divide `weight_decay` by `initial_lr` (default false).
    pub decoupled_weight_decay: bool,
    /// The learning rate the optimizer was created with (lion-pytorch's `_init_lr`); set by
    /// [`Lion::new`] and left alone by schedules.
    pub initial_lr: f64,
    /// The format the state is kept in (default f32; bf16 or f16 halve its memory: each
    /// element is stored to nearest even after every update, the arithmetic staying f32).
    #[serde(skip_serializing_if = "super::is_f32")]
    pub state_format: crate::ElementFormat,
}

impl Default for Lion {
    fn default() -> Self {
        Lion {
            lr: 1e-4,
            betas: (0.9, 0.99),
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            initial_lr: 1e-4,
            state_format: crate::ElementFormat::F32,
        }
    }
}

impl Lion {
    /// With learning rate `lr` (also its `initial_lr`) and the package's other defaults.
    pub fn new(lr: f64) -> Self {
        Lion { lr, initial_lr: lr, ..Self::default() }
    }
    /// Sets `betas`.
    pub fn with_betas(self, beta1: f64, beta2: f64) -> Self {
        Lion { betas: (beta1, beta2), ..self }
    }
}
setters!(Lion { with_weight_decay => weight_decay: f64, with_decoupled_weight_decay => decoupled_weight_decay: bool });

static KERNEL: Kernel = Kernel {
    family: "lion",
    source: include_str!("../../shaders/lion.wgsl"),
    state: &[StateSlot { role: "m", torch_name: "exp_avg", signed: true }],
    // decay mul (1), interpolation mul + fma (3), exact sign, final fma (2), momentum (3). The
    // sign can differ only where the interpolation rounds across zero.
    scalar_size: size_of::<Scalars>(),
    step_error_budget: 9.0,
    stages: crate::step::ELEMENTWISE,
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Scalars {
    decay: f32,
    neg_lr: f32,
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
}

impl Lion {
    fn host_scalars(&self) -> Scalars {
        let (b1, b2) = self.betas;
        let wd = if self.decoupled_weight_decay { self.weight_decay / self.initial_lr } else { self.weight_decay };
        Scalars {
            decay: (1.0 - self.lr * wd) as f32,
            neg_lr: (-self.lr) as f32,
            beta1: b1 as f32,
            one_minus_beta1: (1.0 - b1) as f32,
            beta2: b2 as f32,
            one_minus_beta2: (1.0 - b2) as f32,
        }
    }
}

/// torch.sgn for reals: -1, 0 or 1, NaN kept.
#[inline(always)]
fn sgn(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        x
    }
}

impl Optimizer for Lion {
    super::cycles_beta1!();
    state_format_methods!();
    /// torch keeps no step for lion-pytorch's Lion.
    fn scalar_state(&self, _step: u64) -> Vec<(&'static str, f32)> {
        Vec::new()
    }
    common_methods!(KERNEL);
    fn name(&self) -> &'static str {
        "Lion"
    }
    fn reference(&self) -> &'static str {
        "lion-pytorch 0.2.5 Lion"
    }
    fn validate(&self) -> Result<()> {
        let n = self.name();
        check(n, self.lr > 0.0, || format!("Invalid learning rate: {} (Lion needs lr > 0)", py(self.lr)))?;
        check(n, self.initial_lr > 0.0, || format!("Invalid initial_lr: {}", py(self.initial_lr)))?;
        let (b1, b2) = self.betas;
        check(n, (0.0..=1.0).contains(&b1), || format!("Invalid beta parameter at index 0: {}", py(b1)))?;
        check(n, (0.0..=1.0).contains(&b2), || format!("Invalid beta parameter at index 1: {}", py(b2)))?;
        check(n, self.weight_decay >= 0.0, || format!("Invalid weight_decay value: {}", py(self.weight_decay)))
    }
    fn constants(&self) -> Vec<(&'static str, f64)> {
        Vec::new()
    }
    fn scalars(&self, _step: u64) -> ScalarBlock {
        pack(&self.host_scalars())
    }
    /// The CPU definition of one element's update (`shaders/lion.wgsl` is the GPU one).
    fn update_cpu(&self, step: u64, p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>) {
        crate::simd::dispatch!(Lion, self.update_elements(step, p, g, state))
    }
}

impl Lion {
    /// The update itself, inlined into both versions [`crate::simd::dispatch`] compiles.
    #[inline(always)]
    pub(crate) fn update_elements(&self, _step: u64, p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>) {
        let s = self.host_scalars();
        each(p, g, state, move |p, grad, [m]| {
            let update = sgn(grad.mul_add(s.one_minus_beta1, *m * s.beta1));
            *p = update.mul_add(s.neg_lr, *p * s.decay);
            *m = grad.mul_add(s.one_minus_beta2, *m * s.beta2);
        });
    }
}

with_state_format!(Lion);
