//! LARS, as optax.lars: a staged optimizer, a per-tensor reduction then the update.

use super::{
    Kernel, Optimizer, ScalarBlock, StateSlices, StateSlot, check, check_lr, check_non_negative, common_methods, each,
    flag, pack, py, setters,
};
use crate::error::Result;
use crate::step::{REDUCED_TERMS, Scope, Stage};

/// LARS (You et al., 2017, "Large Batch Training of Convolutional Networks"), as optax's
/// `lars` (`add_decayed_weights`, `scale_by_trust_ratio`, the learning rate, `trace`); not in
/// torch.optim.
///
/// ```text
/// u = g + weight_decay * p
/// trust = trust_coefficient * ‖p‖ / (‖u‖ + eps) per tensor, 1 where either norm is 0
/// t = -lr * trust * u + momentum * t;   p = p + (nesterov ? -lr * trust * u + momentum * t : t)
/// ```
/// optax's defaults: weight decay 0, trust coefficient 0.001, eps 0, momentum 0.9, no
/// Nesterov; optax has no default learning rate (1.0 here). Tensors optax masks out of the
/// decay and the ratio (biases, norms) go into a group of their own with `weight_decay` 0 and
/// `trust_ratio` false. State: `momentum_buffer` (optax's trace).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Lars {
    /// Learning rate (default 1.0).
    pub lr: f64,
    /// Weight decay added to the gradient before the ratio (default 0).
    pub weight_decay: f64,
    /// Scale of the trust ratio (default 0.001).
    pub trust_coefficient: f64,
    /// Added to the update's norm (default 0).
    pub eps: f64,
    /// Momentum of the trace (default 0.9).
    pub momentum: f64,
    /// Nesterov momentum (default false).
    pub nesterov: bool,
    /// Scale by the trust ratio; false for the tensors optax masks out (default true).
    pub trust_ratio: bool,
}

impl Default for Lars {
    fn default() -> Self {
        Lars {
            lr: 1.0,
            weight_decay: 0.0,
            trust_coefficient: 0.001,
            eps: 0.0,
            momentum: 0.9,
            nesterov: false,
            trust_ratio: true,
        }
    }
}

impl Lars {
    /// With learning rate `lr` and optax's other defaults.
    pub fn new(lr: f64) -> Self {
        Lars { lr, ..Self::default() }
    }
}
setters!(Lars {
    with_weight_decay => weight_decay: f64,
    with_trust_coefficient => trust_coefficient: f64,
    with_eps => eps: f64,
    with_momentum => momentum: f64,
    with_nesterov => nesterov: bool,
    with_trust_ratio => trust_ratio: bool,
});

static KERNEL: Kernel = Kernel {
    family: "lars",
    source: include_str!("../../shaders/lars.wgsl"),
    state: &[StateSlot { role: "momentum", torch_name: "momentum_buffer", signed: true }],
    // decay fma (1), two multiplies (1), the trace's fma (1), Nesterov's fma (1), p + (1);
    // the ratio: two sqrt (10), a product (1), + eps (1), a division (3), of sums an f32
    // tree (GPU) and an f64 sum (CPU) round differently (12 for n up to 2^24).
    scalar_size: size_of::<Scalars>(),
    step_error_budget: 35.0,
    stages: &[Stage::Reduce(Scope::Tensor), Stage::Elementwise],
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Scalars {
    weight_decay: f32,
    trust_coefficient: f32,
    eps: f32,
    neg_lr: f32,
    momentum: f32,
}

impl Lars {
    fn host_scalars(&self) -> Scalars {
        Scalars {
            weight_decay: self.weight_decay as f32,
            trust_coefficient: self.trust_coefficient as f32,
            eps: self.eps as f32,
            neg_lr: (-self.lr) as f32,
            momentum: self.momentum as f32,
        }
    }
}

/// u = g + wd * p (the shader's `lars_direction`).
#[inline(always)]
fn direction(s: &Scalars, decay: bool, p: f32, g: f32) -> f32 {
    if decay { s.weight_decay.mul_add(p, g) } else { g }
}

impl Optimizer for Lars {
    super::cycles_momentum!();
    common_methods!(KERNEL);
    fn name(&self) -> &'static str {
        "LARS"
    }
    fn reference(&self) -> &'static str {
        "optax.lars"
    }
    fn validate(&self) -> Result<()> {
        let name = self.name();
        check_lr(name, self.lr)?;
        check_non_negative(name, "weight_decay", self.weight_decay)?;
        check_non_negative(name, "trust_coefficient", self.trust_coefficient)?;
        check_non_negative(name, "epsilon", self.eps)?;
        check(name, (0.0..1.0).contains(&self.momentum), || format!("Invalid momentum value: {}", py(self.momentum)))
    }
    fn constants(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("WEIGHT_DECAY", flag(self.weight_decay != 0.0)),
            ("TRUST_RATIO", flag(self.trust_ratio)),
            ("NESTEROV", flag(self.nesterov)),
        ]
    }
    fn scalars(&self, _step: u64) -> ScalarBlock {
        pack(&self.host_scalars())
    }
    fn update_cpu(&self, step: u64, p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>) {
        // Staged: the CPU runs reduce_cpu then apply_cpu; this is the update with a ratio of 1.
        self.apply_cpu(step, p, g, state, [0.0; REDUCED_TERMS])
    }
    /// The run's ‖p‖² and ‖u‖² (the shader's `reduce_update`), summed in f64.
    fn reduce_cpu(
        &self,
        _stage: usize,
        _step: u64,
        p: &mut [f32],
        g: &[f32],
        state: StateSlices<'_, '_>,
    ) -> [f64; REDUCED_TERMS] {
        let s = self.host_scalars();
        let decay = self.weight_decay != 0.0;
        let mut sums = [0.0f64; REDUCED_TERMS];
        each(p, g, state, |p, grad, [_]| {
            let u = direction(&s, decay, *p, grad);
            sums[0] += f64::from(*p) * f64::from(*p);
            sums[1] += f64::from(u) * f64::from(u);
        });
        sums
    }
    /// The scaled update through the trace (the shader's `update`).
    fn apply_cpu(
        &self,
        _step: u64,
        p: &mut [f32],
        g: &[f32],
        state: StateSlices<'_, '_>,
        reduced: [f32; REDUCED_TERMS],
    ) {
        let s = self.host_scalars();
        let (decay, nesterov) = (self.weight_decay != 0.0, self.nesterov);
        let mut trust = 1.0f32;
        if self.trust_ratio {
            let (param_norm, update_norm) = (reduced[0].sqrt(), reduced[1].sqrt());
            if param_norm > 0.0 && update_norm > 0.0 {
                trust = s.trust_coefficient * param_norm / (update_norm + s.eps);
            }
        }
        each(p, g, state, move |p, grad, [t]| {
            let u = direction(&s, decay, *p, grad) * trust * s.neg_lr;
            *t = s.momentum.mul_add(*t, u);
            let step = if nesterov { s.momentum.mul_add(*t, u) } else { *t };
            *p += step;
        });
    }
}
