//! Schedule-free AdamW and SGD, as the authors' package (facebookresearch/schedule_free,
//! `schedulefree` 1.4.1: `AdamWScheduleFree`, `SGDScheduleFree`): the parameters hold the
//! gradient-evaluation point y in train mode, the state the base sequence z; the averaged x
//! the method is named for is what `eval()` puts in the parameters.

use std::sync::Mutex;

use super::{
    Kernel, Optimizer, ScalarBlock, StateSlices, StateSlot, check, check_betas, check_lr, check_non_negative,
    common_methods, each, lerp, pack, py, setters,
};
use crate::error::Result;

/// The averaging weights of step `step` (1-based): torch's Python floats, `(ckp1, lr)` of
/// that step, from a cache of the running `lr_max` and `weight_sum` so that consecutive
/// steps cost O(1). They are functions of the step for a constant learning rate (the
/// method's premise); a learning rate changed mid-run is taken as if it had always been the
/// new one (the package accumulates the history instead).
#[derive(Default)]
struct Weights(Mutex<Option<WeightCache>>);

#[derive(Clone, Copy, PartialEq)]
struct WeightCache {
    /// The configuration the sums belong to: lr, warmup_steps, r, weight_lr_power.
    key: (u64, u64, u64, u64),
    step: u64,
    lr_max: f64,
    weight_sum: f64,
}

impl Clone for Weights {
    fn clone(&self) -> Self {
        Weights(Mutex::new(*self.0.lock().unwrap_or_else(|e| e.into_inner())))
    }
}

impl PartialEq for Weights {
    /// A cache: never part of an optimizer's identity.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Weights")
    }
}

impl Weights {
    /// `(ckp1, scheduled lr)` of step `step`, the package's arithmetic in its order.
    fn at(&self, step: u64, lr: f64, warmup_steps: u64, r: f64, weight_lr_power: f64) -> (f64, f64) {
        let key = (lr.to_bits(), warmup_steps, r.to_bits(), weight_lr_power.to_bits());
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut c = match *cache {
            Some(c) if c.key == key && c.step < step => c,
            _ => WeightCache { key, step: 0, lr_max: -1.0, weight_sum: 0.0 },
        };
        let (mut ckp1, mut scheduled) = (0.0, 0.0);
        while c.step < step {
            let k = c.step; // the package's group['k'] before the increment
            let sched = if k < warmup_steps { (k + 1) as f64 / warmup_steps as f64 } else { 1.0 };
            scheduled = lr * sched;
            c.lr_max = scheduled.max(c.lr_max);
            let weight = ((k + 1) as f64).powf(r) * c.lr_max.powf(weight_lr_power);
            c.weight_sum += weight;
            ckp1 = if c.weight_sum == 0.0 { 0.0 } else { weight / c.weight_sum };
            c.step += 1;
        }
        *cache = Some(c);
        (ckp1, scheduled)
    }
}

/// AdamWScheduleFree (`schedulefree` 1.4.1).
///
/// ```text
/// sched = (k+1)/warmup_steps for k < warmup_steps, else 1;  lr_t = lr · sched
/// lr_max = max(lr_t, lr_max);  weight = (k+1)^r · lr_max^weight_lr_power
/// weight_sum += weight;  ckp1 = weight / weight_sum
/// v = β2 v + (1 - β2) g²;  d = g / (sqrt(v / (1 - β2^(k+1))) + eps)
/// d = d + weight_decay · y                         (decay at y)
/// y = lerp(y, z, ckp1);  y = y + lr_t (β1 (1 - ckp1) - 1) d;  z = z - lr_t d
/// ```
/// The parameters are y while training; `eval()` (on the optimizer holding it) turns them
/// into x = lerp(y, z, 1 - 1/β1) and `train()` back. z starts as the initial parameters.
/// State: `z`, `exp_avg_sq`. Version 1.4.1 divides the second moment by its bias correction
/// (earlier versions scaled the learning rate by its square root).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct AdamWScheduleFree {
    /// Learning rate (default 0.0025).
    pub lr: f64,
    /// (β1, β2): β1 the interpolation of y between z and x, β2 the second moment's (default
    /// (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to the denominator (default 1e-8).
    pub eps: f64,
    /// Weight decay, at y (default 0).
    pub weight_decay: f64,
    /// Linear warmup of the learning rate over this many steps (default 0).
    pub warmup_steps: u64,
    /// The averaging weight's polynomial power in the step (default 0).
    pub r: f64,
    /// The averaging weight's power of the largest learning rate so far (default 2).
    pub weight_lr_power: f64,
    #[serde(skip)]
    weights: Weights,
}

impl Default for AdamWScheduleFree {
    fn default() -> Self {
        AdamWScheduleFree {
            lr: 0.0025,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            warmup_steps: 0,
            r: 0.0,
            weight_lr_power: 2.0,
            weights: Weights::default(),
        }
    }
}

impl AdamWScheduleFree {
    /// With learning rate `lr` and the package's other defaults.
    pub fn new(lr: f64) -> Self {
        AdamWScheduleFree { lr, ..Self::default() }
    }
    /// Sets `betas`.
    pub fn with_betas(self, beta1: f64, beta2: f64) -> Self {
        AdamWScheduleFree { betas: (beta1, beta2), ..self }
    }
}
setters!(AdamWScheduleFree {
    with_eps => eps: f64,
    with_weight_decay => weight_decay: f64,
    with_warmup_steps => warmup_steps: u64,
    with_r => r: f64,
    with_weight_lr_power => weight_lr_power: f64,
});

/// SGDScheduleFree (`schedulefree` 1.4.1): as [`AdamWScheduleFree`] without the second
/// moment, `momentum` in β1's place.
///
/// ```text
/// d = g + weight_decay · y
/// y = lerp(y, z, ckp1);  y = y + lr_t (momentum (1 - ckp1) - 1) d;  z = z - lr_t d
/// ```
/// State: `z`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SgdScheduleFree {
    /// Learning rate (default 1.0).
    pub lr: f64,
    /// The interpolation of y between z and x (default 0.9).
    pub momentum: f64,
    /// Weight decay, at y (default 0).
    pub weight_decay: f64,
    /// Linear warmup of the learning rate over this many steps (default 0).
    pub warmup_steps: u64,
    /// The averaging weight's polynomial power in the step (default 0).
    pub r: f64,
    /// The averaging weight's power of the largest learning rate so far (default 2).
    pub weight_lr_power: f64,
    #[serde(skip)]
    weights: Weights,
}

impl Default for SgdScheduleFree {
    fn default() -> Self {
        SgdScheduleFree {
            lr: 1.0,
            momentum: 0.9,
            weight_decay: 0.0,
            warmup_steps: 0,
            r: 0.0,
            weight_lr_power: 2.0,
            weights: Weights::default(),
        }
    }
}

impl SgdScheduleFree {
    /// With learning rate `lr` and the package's other defaults.
    pub fn new(lr: f64) -> Self {
        SgdScheduleFree { lr, ..Self::default() }
    }
}
setters!(SgdScheduleFree {
    with_momentum => momentum: f64,
    with_weight_decay => weight_decay: f64,
    with_warmup_steps => warmup_steps: u64,
    with_r => r: f64,
    with_weight_lr_power => weight_lr_power: f64,
});

static ADAMW_KERNEL: Kernel = Kernel {
    family: "schedule_free_adamw",
    source: include_str!("../../shaders/schedule_free_adamw.wgsl"),
    state: &[
        StateSlot { role: "z", torch_name: "z", signed: true },
        StateSlot { role: "v", torch_name: "exp_avg_sq", signed: false },
    ],
    scalar_size: size_of::<AdamWScalars>(),
    // v: mul + fma (0.5 + 1); the denominator: div 2.5, sqrt 4.5, add 0.5; the quotient 2.5;
    // decay fma 1; lerp fma 1; the two fmas 1 + 1; each side's roundings (the CPU's 0.5 per op).
    step_error_budget: 24.0,
    stages: crate::step::ELEMENTWISE,
};

static SGD_KERNEL: Kernel = Kernel {
    family: "schedule_free_sgd",
    source: include_str!("../../shaders/schedule_free_sgd.wgsl"),
    state: &[StateSlot { role: "z", torch_name: "z", signed: true }],
    scalar_size: size_of::<SgdScalars>(),
    // decay fma, lerp fma, the two fmas: 1 each, and the CPU's 0.5 per op.
    step_error_budget: 8.0,
    stages: crate::step::ELEMENTWISE,
};

/// The scalars both share (`struct Scalars`' first members in both shaders).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AdamWScalars {
    ckp1: f32,
    y_coef: f32,
    neg_lr: f32,
    weight_decay: f32,
    first_step: u32,
    beta2: f32,
    one_minus_beta2: f32,
    bias_correction2: f32,
    eps: f32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SgdScalars {
    ckp1: f32,
    y_coef: f32,
    neg_lr: f32,
    weight_decay: f32,
    first_step: u32,
}

/// The package's checks (its constructor has none; these are the Adam ones and what keeps
/// every scalar finite).
fn check_schedule_free(name: &'static str, lr: f64, weight_decay: f64, r: f64, power: f64) -> Result<()> {
    check_lr(name, lr)?;
    check_non_negative(name, "weight_decay", weight_decay)?;
    check(name, r.is_finite() && r >= 0.0, || format!("Invalid r value: {}", py(r)))?;
    check(name, power.is_finite() && power >= 0.0, || format!("Invalid weight_lr_power value: {}", py(power)))?;
    check(name, lr.is_finite(), || format!("Invalid learning rate: {}", py(lr)))
}

impl AdamWScheduleFree {
    fn host_scalars(&self, step: u64) -> AdamWScalars {
        let (ckp1, lr) = self.weights.at(step, self.lr, self.warmup_steps, self.r, self.weight_lr_power);
        let (beta1, beta2) = self.betas;
        AdamWScalars {
            ckp1: ckp1 as f32,
            y_coef: (lr * (beta1 * (1.0 - ckp1) - 1.0)) as f32,
            neg_lr: (-lr) as f32,
            weight_decay: self.weight_decay as f32,
            first_step: u32::from(step == 1),
            beta2: beta2 as f32,
            one_minus_beta2: (1.0 - beta2) as f32,
            bias_correction2: (1.0 - beta2.powf(step as f64)) as f32,
            eps: self.eps as f32,
        }
    }
}

impl SgdScheduleFree {
    fn host_scalars(&self, step: u64) -> SgdScalars {
        let (ckp1, lr) = self.weights.at(step, self.lr, self.warmup_steps, self.r, self.weight_lr_power);
        SgdScalars {
            ckp1: ckp1 as f32,
            y_coef: (lr * (self.momentum * (1.0 - ckp1) - 1.0)) as f32,
            neg_lr: (-lr) as f32,
            weight_decay: self.weight_decay as f32,
            first_step: u32::from(step == 1),
        }
    }
}

/// The shared tail of both updates: the decay at y, then y and z.
#[inline(always)]
fn interpolate(
    y: &mut f32,
    z: &mut f32,
    d: f32,
    (ckp1, y_coef, neg_lr, weight_decay, first): (f32, f32, f32, f32, bool),
) {
    // z starts as the parameters (the package's clone at the first step).
    if first {
        *z = *y;
    }
    let d = if weight_decay != 0.0 { y.mul_add(weight_decay, d) } else { d };
    *y = lerp(*y, *z, ckp1);
    *y = d.mul_add(y_coef, *y);
    *z = d.mul_add(neg_lr, *z);
}

impl Optimizer for AdamWScheduleFree {
    common_methods!(ADAMW_KERNEL);
    fn name(&self) -> &'static str {
        "AdamWScheduleFree"
    }
    fn reference(&self) -> &'static str {
        "schedulefree 1.4.1 AdamWScheduleFree"
    }
    fn validate(&self) -> Result<()> {
        let name = "AdamWScheduleFree";
        check_schedule_free(name, self.lr, self.weight_decay, self.r, self.weight_lr_power)?;
        check_non_negative(name, "epsilon", self.eps)?;
        check_betas(name, self.betas)
    }
    fn train_mode_weight(&self, to_train: bool) -> Option<(usize, f32)> {
        Some((0, mode_weight(self.betas.0, to_train)))
    }
    fn constants(&self) -> Vec<(&'static str, f64)> {
        vec![("WEIGHT_DECAY", super::flag(self.weight_decay != 0.0))]
    }
    fn scalars(&self, step: u64) -> ScalarBlock {
        pack(&self.host_scalars(step))
    }
    fn update_cpu(&self, step: u64, p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>) {
        let s = self.host_scalars(step);
        let tail = (s.ckp1, s.y_coef, s.neg_lr, s.weight_decay, s.first_step == 1);
        each(p, g, state, |y, grad, [z, v]| {
            // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1-beta2)
            *v = (s.one_minus_beta2 * grad).mul_add(grad, *v * s.beta2);
            // denom = exp_avg_sq.div(bias_correction2).sqrt_().add_(eps); grad.div_(denom)
            let d = grad / ((*v / s.bias_correction2).sqrt() + s.eps);
            interpolate(y, z, d, tail);
        });
    }
}

impl Optimizer for SgdScheduleFree {
    common_methods!(SGD_KERNEL);
    fn name(&self) -> &'static str {
        "SGDScheduleFree"
    }
    fn reference(&self) -> &'static str {
        "schedulefree 1.4.1 SGDScheduleFree"
    }
    fn validate(&self) -> Result<()> {
        let name = "SGDScheduleFree";
        check_schedule_free(name, self.lr, self.weight_decay, self.r, self.weight_lr_power)?;
        check(name, (0.0..1.0).contains(&self.momentum), || format!("Invalid momentum value: {}", py(self.momentum)))
    }
    fn train_mode_weight(&self, to_train: bool) -> Option<(usize, f32)> {
        Some((0, mode_weight(self.momentum, to_train)))
    }
    fn constants(&self) -> Vec<(&'static str, f64)> {
        vec![("WEIGHT_DECAY", super::flag(self.weight_decay != 0.0))]
    }
    fn scalars(&self, step: u64) -> ScalarBlock {
        pack(&self.host_scalars(step))
    }
    fn update_cpu(&self, step: u64, p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>) {
        let s = self.host_scalars(step);
        let tail = (s.ckp1, s.y_coef, s.neg_lr, s.weight_decay, s.first_step == 1);
        each(p, g, state, |y, grad, [z]| interpolate(y, z, grad, tail));
    }
}

/// The weight of `p.lerp_(z, w)` that moves the parameters between y and x: `1 - beta1`
/// into train mode (x → y), `1 - 1/beta1` into eval mode (y → x), in f64 rounded once, as
/// the package's Python float.
fn mode_weight(beta1: f64, to_train: bool) -> f32 {
    (if to_train { 1.0 - beta1 } else { 1.0 - 1.0 / beta1 }) as f32
}
