//! RMSprop, as torch.optim.RMSprop.

use super::{
    Kernel, Optimizer, ScalarBlock, StateSlices, StateSlot, check_lr, check_non_negative, common_methods, direction,
    each, flag, lerp, pack, setters, state_format_methods, with_state_format,
};
use crate::error::Result;

/// RMSprop, torch.optim.RMSprop (single-tensor path).
///
/// ```text
/// g = maximize ? -grad : grad;  g = g + weight_decay * p
/// sq = alpha * sq + (1 - alpha) * g²
/// centered: ga = lerp(ga, g, 1 - alpha);  avg = sqrt(sq - ga²) + eps   else avg = sqrt(sq) + eps
/// momentum > 0: buf = momentum * buf + g / avg;  p = p - lr * buf
/// else:         p = p - lr * g / avg
/// ```
/// eps outside the square root and no bias correction, as torch (Hinton's lecture 6e); the
/// momentum buffer starts at zero, unlike SGD's. State: `square_avg`, `momentum_buffer`
/// (momentum > 0), `grad_avg` (centered). optax's `rmsprop` defaults to decay 0.9 and eps
/// inside the root.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RmsProp {
    /// Learning rate (default 1e-2).
    pub lr: f64,
    /// Smoothing constant (default 0.99; torch sets no upper bound).
    pub alpha: f64,
    /// Added to the denominator (default 1e-8).
    pub eps: f64,
    /// L2 penalty (default 0).
    pub weight_decay: f64,
    /// Momentum factor (default 0).
    pub momentum: f64,
    /// Normalise by the variance estimate instead of the raw second moment (default false).
    pub centered: bool,
    /// Maximize the objective (default false).
    pub maximize: bool,
    /// The format the state is kept in (default f32; bf16 or f16 halve its memory: each
    /// element is stored to nearest even after every update, the arithmetic staying f32).
    #[serde(skip_serializing_if = "super::is_f32")]
    pub state_format: crate::ElementFormat,
}

impl Default for RmsProp {
    fn default() -> Self {
        RmsProp {
            lr: 1e-2,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
            maximize: false,
            state_format: crate::ElementFormat::F32,
        }
    }
}

impl RmsProp {
    /// With learning rate `lr` and torch's other defaults.
    pub fn new(lr: f64) -> Self {
        RmsProp { lr, ..Self::default() }
    }
}
setters!(RmsProp {
    with_alpha => alpha: f64,
    with_eps => eps: f64,
    with_weight_decay => weight_decay: f64,
    with_momentum => momentum: f64,
    with_centered => centered: bool,
    with_maximize => maximize: bool,
});

static KERNEL: Kernel = Kernel {
    family: "rmsprop",
    source: include_str!("../../shaders/rmsprop.wgsl"),
    state: &[
        StateSlot { role: "square_avg", torch_name: "square_avg", signed: false },
        StateSlot { role: "momentum", torch_name: "momentum_buffer", signed: true },
        StateSlot { role: "grad_avg", torch_name: "grad_avg", signed: true },
    ],
    // L2 fma (2), sq three mul and an add (4), centered lerp (3) and mul, add (2), sqrt (5),
    // + eps (1), momentum mul, div, add (5), final fma (2).
    scalar_size: size_of::<Scalars>(),
    step_error_budget: 24.0,
    stages: crate::step::ELEMENTWISE,
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Scalars {
    alpha: f32,
    one_minus_alpha: f32,
    eps: f32,
    neg_lr: f32,
    momentum: f32,
    weight_decay: f32,
}

impl RmsProp {
    fn host_scalars(&self) -> Scalars {
        Scalars {
            alpha: self.alpha as f32,
            one_minus_alpha: (1.0 - self.alpha) as f32,
            eps: self.eps as f32,
            neg_lr: (-self.lr) as f32,
            momentum: self.momentum as f32,
            weight_decay: self.weight_decay as f32,
        }
    }
}

impl Optimizer for RmsProp {
    super::cycles_momentum!();
    state_format_methods!();
    common_methods!(KERNEL);
    fn name(&self) -> &'static str {
        "RMSprop"
    }
    fn reference(&self) -> &'static str {
        "torch.optim.RMSprop"
    }
    fn validate(&self) -> Result<()> {
        let n = self.name();
        check_lr(n, self.lr)?;
        check_non_negative(n, "epsilon", self.eps)?;
        check_non_negative(n, "momentum", self.momentum)?;
        check_non_negative(n, "weight_decay", self.weight_decay)?;
        check_non_negative(n, "alpha", self.alpha)
    }
    fn uses_state(&self, slot: usize) -> bool {
        match slot {
            0 => true,
            1 => self.momentum > 0.0,
            _ => self.centered,
        }
    }
    fn constants(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("MAXIMIZE", flag(self.maximize)),
            ("WEIGHT_DECAY", flag(self.weight_decay != 0.0)),
            ("CENTERED", flag(self.centered)),
            ("MOMENTUM", flag(self.momentum > 0.0)),
        ]
    }
    fn scalars(&self, _step: u64) -> ScalarBlock {
        pack(&self.host_scalars())
    }
    /// The CPU definition of one element's update (`shaders/rmsprop.wgsl` is the GPU one).
    fn update_cpu(&self, step: u64, p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>) {
        crate::simd::dispatch!(RmsProp, self.update_elements(step, p, g, state))
    }
}

impl RmsProp {
    /// The update itself, inlined into both versions [`crate::simd::dispatch`] compiles.
    #[inline(always)]
    pub(crate) fn update_elements(&self, _step: u64, p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>) {
        let s = self.host_scalars();
        let (maximize, centered, momentum) = (self.maximize, self.centered, self.momentum > 0.0);
        // One definition of the element's update; the momentum buffer and the centred
        // average are slots of their own loops (`Some`) or absent (`None`), decided once per
        // call, not per element.
        let update = move |p: &mut f32, grad: f32, sq: &mut f32, buf: Option<&mut f32>, ga: Option<&mut f32>| {
            let d = direction(maximize, s.weight_decay, grad, *p);
            *sq = (s.one_minus_alpha * d).mul_add(d, *sq * s.alpha);
            let avg = match ga {
                Some(ga) => {
                    *ga = lerp(*ga, d, s.one_minus_alpha);
                    (-*ga).mul_add(*ga, *sq).sqrt()
                }
                None => sq.sqrt(),
            } + s.eps;
            match buf {
                Some(buf) => {
                    *buf = *buf * s.momentum + d / avg;
                    *p = buf.mul_add(s.neg_lr, *p);
                }
                None => *p += (s.neg_lr * d) / avg,
            }
        };
        match (momentum, centered) {
            (true, true) => each(p, g, state, move |p, x, [sq, buf, ga]| update(p, x, sq, Some(buf), Some(ga))),
            (true, false) => each(p, g, state, move |p, x, [sq, buf]| update(p, x, sq, Some(buf), None)),
            (false, true) => each(p, g, state, move |p, x, [sq, ga]| update(p, x, sq, None, Some(ga))),
            (false, false) => each(p, g, state, move |p, x, [sq]| update(p, x, sq, None, None)),
        }
    }
}

with_state_format!(RmsProp);
