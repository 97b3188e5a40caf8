//! Stochastic gradient descent with momentum, as torch.optim.SGD.

use super::{
    Kernel, Optimizer, ScalarBlock, StateSlices, StateSlot, check, check_lr, check_non_negative, common_methods,
    direction, each, flag, pack, py, setters, state_format_methods, with_state_format,
};
use crate::error::Result;

/// SGD, torch.optim.SGD (single-tensor path).
///
/// ```text
/// g = maximize ? -grad : grad
/// if weight_decay != 0: g = g + weight_decay * p
/// if momentum != 0:
///     buf = (first step) ? g : momentum * buf + (1 - dampening) * g
///     g   = nesterov ? g + momentum * buf : buf
/// p = p - lr * g
/// ```
/// The momentum buffer starts as the first gradient (no dampening on that step), as torch
/// does; optax's `trace` and the Sutskever form start from zero. State: `momentum_buffer`
/// (only with momentum). Differences from torch: a NaN `lr` is rejected (torch's
/// `lr < 0.0` check lets it through).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Sgd {
    /// Learning rate (torch default 1e-3).
    pub lr: f64,
    /// Momentum factor (default 0: no buffer).
    pub momentum: f64,
    /// Dampening of the gradient in the momentum buffer (default 0).
    pub dampening: f64,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f64,
    /// Nesterov momentum (default false; needs momentum > 0 and dampening = 0).
    pub nesterov: bool,
    /// Maximize the objective instead of minimizing (default false).
    pub maximize: bool,
    /// The format the state is kept in (default f32; bf16 or f16 halve its memory: each
    /// element is stored to nearest even after every update, the arithmetic staying f32).
    #[serde(skip_serializing_if = "super::is_f32")]
    pub state_format: crate::ElementFormat,
}

impl Default for Sgd {
    fn default() -> Self {
        Sgd {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            maximize: false,
            state_format: crate::ElementFormat::F32,
        }
    }
}

impl Sgd {
    /// SGD with learning rate `lr` and torch's other defaults.
    pub fn new(lr: f64) -> Self {
        Sgd { lr, ..Self::default() }
    }
}
setters!(Sgd {
    with_momentum => momentum: f64,
    with_dampening => dampening: f64,
    with_weight_decay => weight_decay: f64,
    with_nesterov => nesterov: bool,
    with_maximize => maximize: bool,
});

static KERNEL: Kernel = Kernel {
    family: "sgd",
    source: include_str!("../../shaders/sgd.wgsl"),
    state: &[StateSlot { role: "momentum", torch_name: "momentum_buffer", signed: true }],
    // maximize (exact), L2 fma (2), momentum mul + fma (1 + 2), nesterov fma (2), final fma (2).
    scalar_size: size_of::<Scalars>(),
    step_error_budget: 9.0,
    stages: crate::step::ELEMENTWISE,
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Scalars {
    neg_lr: f32,
    weight_decay: f32,
    momentum: f32,
    one_minus_dampening: f32,
    first_step: u32,
}

impl Sgd {
    fn host_scalars(&self, step: u64) -> Scalars {
        Scalars {
            neg_lr: (-self.lr) as f32,
            weight_decay: self.weight_decay as f32,
            momentum: self.momentum as f32,
            one_minus_dampening: (1.0 - self.dampening) as f32,
            first_step: u32::from(step == 1),
        }
    }
}

impl Optimizer for Sgd {
    super::cycles_momentum!();
    state_format_methods!();
    /// torch keeps no step for SGD.
    fn scalar_state(&self, _step: u64) -> Vec<(&'static str, f32)> {
        Vec::new()
    }
    common_methods!(KERNEL);
    fn name(&self) -> &'static str {
        "SGD"
    }
    fn reference(&self) -> &'static str {
        "torch.optim.SGD"
    }

    fn validate(&self) -> Result<()> {
        let n = self.name();
        check_lr(n, self.lr)?;
        check_non_negative(n, "momentum", self.momentum)?;
        check_non_negative(n, "weight_decay", self.weight_decay)?;
        check(n, self.dampening.is_finite(), || format!("Invalid dampening value: {}", py(self.dampening)))?;
        check(n, !self.nesterov || (self.momentum > 0.0 && self.dampening == 0.0), || {
            "Nesterov momentum requires a momentum and zero dampening".into()
        })
    }

    fn uses_state(&self, slot: usize) -> bool {
        slot == 0 && self.momentum != 0.0
    }

    fn constants(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("MAXIMIZE", flag(self.maximize)),
            ("WEIGHT_DECAY", flag(self.weight_decay != 0.0)),
            ("MOMENTUM", flag(self.momentum != 0.0)),
            ("NESTEROV", flag(self.nesterov)),
        ]
    }

    fn scalars(&self, step: u64) -> ScalarBlock {
        pack(&self.host_scalars(step))
    }

    /// The CPU definition of one element's update (`shaders/sgd.wgsl` is the GPU one).
    fn update_cpu(&self, step: u64, p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>) {
        crate::simd::dispatch!(Sgd, self.update_elements(step, p, g, state))
    }
}

impl Sgd {
    /// The update itself, inlined into both versions [`crate::simd::dispatch`] compiles.
    #[inline(always)]
    pub(crate) fn update_elements(&self, step: u64, p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>) {
        let s = self.host_scalars(step);
        let (momentum, maximize, nesterov) = (self.momentum != 0.0, self.maximize, self.nesterov);
        // The momentum buffer is a slot of its own loop, or absent without momentum.
        let update = move |p: &mut f32, grad: f32, buf: Option<&mut f32>| {
            let mut d = direction(maximize, s.weight_decay, grad, *p);
            if let Some(buf) = buf {
                *buf = if s.first_step == 1 { d } else { d.mul_add(s.one_minus_dampening, *buf * s.momentum) };
                d = if nesterov { buf.mul_add(s.momentum, d) } else { *buf };
            }
            *p = d.mul_add(s.neg_lr, *p);
        };
        if momentum {
            each(p, g, state, move |p, grad, [buf]| update(p, grad, Some(buf)));
        } else {
            each(p, g, state, move |p, grad, []| update(p, grad, None));
        }
    }
}

with_state_format!(Sgd);
