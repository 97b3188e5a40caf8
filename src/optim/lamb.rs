//! LAMB, as optax.lamb (and apex's FusedLAMB): a staged optimizer, a per-tensor reduction
//! then the element-wise update.

use super::{
    Kernel, Optimizer, ScalarBlock, StateSlices, StateSlot, check_adam_like, common_methods, each, flag, pack, setters,
};
use crate::error::Result;
use crate::step::{REDUCED_TERMS, Scope, Stage};

/// LAMB (You et al., 2020, "Large Batch Optimization for Deep Learning"), as optax's `lamb`
/// (`scale_by_adam`, `add_decayed_weights`, `scale_by_trust_ratio`); not in torch.optim.
///
/// ```text
/// m = beta1 * m + (1 - beta1) * g;   v = beta2 * v + (1 - beta2) * g²
/// u = (m / bc1) / (sqrt(v / bc2) + eps) + weight_decay * p      # bc = 1 - beta^t, or 1
/// trust = ‖p‖ / ‖u‖ per tensor, 1 where either norm is 0;  trust_clip: min(trust, 1)
/// p = p - lr * trust * u
/// ```
/// optax's defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-6, weight decay 0, bias
/// correction on. The norms are per parameter tensor of a group (a [`crate::ParamGroup`]'s
/// tensors each get their own), computed on the GPU by a reduction stage that also updates
/// the moments — no pass rewrites the gradients. apex's FusedLAMB defaults weight decay to
/// 0.01, applies the ratio only to tensors with weight decay (unless `use_nvlamb`) and clips
/// the global gradient norm itself (here: `GradControl`); optax computes the bias corrections
/// in f32 where this crate rounds torch-style f64 ones once. `trust_clip` is timm's option.
/// State: `exp_avg`, `exp_avg_sq`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Lamb {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// Coefficients of the running averages of g and g² (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to the denominator (default 1e-6).
    pub eps: f64,
    /// Decoupled weight decay, added to the direction before the trust ratio (default 0).
    pub weight_decay: f64,
    /// Divide the moments by their bias corrections (default true).
    pub bias_correction: bool,
    /// Clamp the trust ratio to at most 1 (default false).
    pub trust_clip: bool,
}

impl Default for Lamb {
    fn default() -> Self {
        Lamb { lr: 1e-3, betas: (0.9, 0.999), eps: 1e-6, weight_decay: 0.0, bias_correction: true, trust_clip: false }
    }
}

impl Lamb {
    /// With learning rate `lr` and optax's other defaults.
    pub fn new(lr: f64) -> Self {
        Lamb { lr, ..Self::default() }
    }
    /// Sets `betas`.
    pub fn with_betas(self, beta1: f64, beta2: f64) -> Self {
        Lamb { betas: (beta1, beta2), ..self }
    }
}
setters!(Lamb {
    with_eps => eps: f64,
    with_weight_decay => weight_decay: f64,
    with_bias_correction => bias_correction: bool,
    with_trust_clip => trust_clip: bool,
});

static KERNEL: Kernel = Kernel {
    family: "lamb",
    source: include_str!("../../shaders/lamb.wgsl"),
    state: &[
        StateSlot { role: "m", torch_name: "exp_avg", signed: true },
        StateSlot { role: "v", torch_name: "exp_avg_sq", signed: false },
    ],
    // m mul + fma (3), v three mul, an add (4), two divisions (6), sqrt (5), + eps (1),
    // division (3), decay fma (1), the update's fma (1) and the trust ratio's product (1):
    // 25; the ratio itself adds two sqrt (10) and a division (3) of sums that an f32 tree
    // (GPU) and an f64 sum (CPU) round differently, by about log2(n) / 2 ulp for n
    // elements: 12 for n up to 2^24.
    scalar_size: size_of::<Scalars>(),
    step_error_budget: 50.0,
    stages: &[Stage::Reduce(Scope::Tensor), Stage::Elementwise],
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Scalars {
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    bias_correction1: f32,
    bias_correction2: f32,
    eps: f32,
    weight_decay: f32,
    neg_lr: f32,
}

impl Lamb {
    /// f64 on the host, one rounding to f32 per scalar.
    fn host_scalars(&self, step: u64) -> Scalars {
        let (b1, b2) = self.betas;
        let t = step as f64;
        let (bc1, bc2) = if self.bias_correction { (1.0 - b1.powf(t), 1.0 - b2.powf(t)) } else { (1.0, 1.0) };
        Scalars {
            beta1: b1 as f32,
            one_minus_beta1: (1.0 - b1) as f32,
            beta2: b2 as f32,
            one_minus_beta2: (1.0 - b2) as f32,
            bias_correction1: bc1 as f32,
            bias_correction2: bc2 as f32,
            eps: self.eps as f32,
            weight_decay: self.weight_decay as f32,
            neg_lr: (-self.lr) as f32,
        }
    }
}

/// The direction from the stored moments (the shader's `direction`).
#[inline(always)]
fn direction(s: &Scalars, decay: bool, p: f32, m: f32, v: f32) -> f32 {
    let u = (m / s.bias_correction1) / ((v / s.bias_correction2).sqrt() + s.eps);
    if decay { s.weight_decay.mul_add(p, u) } else { u }
}

impl Optimizer for Lamb {
    super::cycles_beta1!();
    common_methods!(KERNEL);
    fn name(&self) -> &'static str {
        "LAMB"
    }
    fn reference(&self) -> &'static str {
        "optax.lamb"
    }
    fn validate(&self) -> Result<()> {
        check_adam_like(self.name(), self.lr, self.eps, self.betas, self.weight_decay)
    }
    fn constants(&self) -> Vec<(&'static str, f64)> {
        vec![("WEIGHT_DECAY", flag(self.weight_decay != 0.0)), ("TRUST_CLIP", flag(self.trust_clip))]
    }
    fn scalars(&self, step: u64) -> ScalarBlock {
        pack(&self.host_scalars(step))
    }
    fn update_cpu(&self, step: u64, p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>) {
        // Staged: the CPU runs reduce_cpu then apply_cpu; this is the update with a ratio of 1.
        self.apply_cpu(step, p, g, state, [0.0; REDUCED_TERMS])
    }
    /// The moments and the run's ‖p‖² and ‖u‖² (the shader's `reduce_update`), summed in f64.
    fn reduce_cpu(
        &self,
        _stage: usize,
        step: u64,
        p: &mut [f32],
        g: &[f32],
        state: StateSlices<'_, '_>,
    ) -> [f64; REDUCED_TERMS] {
        let s = self.host_scalars(step);
        let decay = self.weight_decay != 0.0;
        let mut sums = [0.0f64; REDUCED_TERMS];
        each(p, g, state, |p, grad, [m, v]| {
            *m = grad.mul_add(s.one_minus_beta1, *m * s.beta1);
            *v = (s.one_minus_beta2 * grad).mul_add(grad, *v * s.beta2);
            let u = direction(&s, decay, *p, *m, *v);
            sums[0] += f64::from(*p) * f64::from(*p);
            sums[1] += f64::from(u) * f64::from(u);
        });
        sums
    }
    /// `p = p - lr * trust * u` with this tensor's sums (the shader's `update`).
    fn apply_cpu(
        &self,
        step: u64,
        p: &mut [f32],
        g: &[f32],
        state: StateSlices<'_, '_>,
        reduced: [f32; REDUCED_TERMS],
    ) {
        let s = self.host_scalars(step);
        let decay = self.weight_decay != 0.0;
        let (param_norm, update_norm) = (reduced[0].sqrt(), reduced[1].sqrt());
        let mut trust = if param_norm > 0.0 && update_norm > 0.0 { param_norm / update_norm } else { 1.0 };
        if self.trust_clip {
            trust = trust.min(1.0);
        }
        let scale = s.neg_lr * trust;
        each(p, g, state, move |p, _, [m, v]| {
            *p = direction(&s, decay, *p, *m, *v).mul_add(scale, *p);
        });
    }
}
