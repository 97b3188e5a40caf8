//! Adam and AdamW, as torch.optim.Adam / torch.optim.AdamW.

use super::{
    AdamMoments, Kernel, Optimizer, ScalarBlock, StateSlices, StateSlot, check_adam_like, common_methods, each, flag,
    nan_max, pack, setters, state_format_methods, with_state_format,
};
use crate::error::Result;

/// Adam, torch.optim.Adam (single-tensor path), weight decay as an L2 term by default.
///
/// ```text
/// t = t + 1;  g = maximize ? -grad : grad
/// if weight_decay != 0:  decoupled ? p = p * (1 - lr*wd) : g = g + wd * p
/// m = lerp(m, g, 1 - beta1)
/// v = beta2 * v + (1 - beta2) * g * g
/// s = amsgrad ? (v_max = max(v_max, v)) : v          # max of the raw v, as torch
/// p = p - (lr / (1 - beta1^t)) * m / (sqrt(s) / sqrt(1 - beta2^t) + eps)
/// ```
/// Bias corrections and step size are computed on the host in f64 and rounded once to f32.
/// State: `exp_avg` (m), `exp_avg_sq` (v), `max_exp_avg_sq` (v_max, AMSGrad only).
/// Kingma & Ba (2015); AMSGrad: Reddi et al. (2018). Unlike optax's `amsgrad`, the maximum
/// is taken over the raw, not the bias-corrected, second moment.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Adam {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// Coefficients of the running averages of g and g² (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to the denominator (default 1e-8).
    pub eps: f64,
    /// Weight decay (default 0; L2 unless `decoupled_weight_decay`).
    pub weight_decay: f64,
    /// AMSGrad variant (default false).
    pub amsgrad: bool,
    /// Maximize the objective (default false).
    pub maximize: bool,
    /// Decoupled weight decay, i.e. AdamW (default false).
    pub decoupled_weight_decay: bool,
    /// The format the state is kept in (default f32; bf16 or f16 halve its memory: each
    /// element is stored to nearest even after every update, the arithmetic staying f32).
    #[serde(skip_serializing_if = "super::is_f32")]
    pub state_format: crate::ElementFormat,
}

impl Default for Adam {
    fn default() -> Self {
        Adam {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            amsgrad: false,
            maximize: false,
            decoupled_weight_decay: false,
            state_format: crate::ElementFormat::F32,
        }
    }
}

/// AdamW, torch.optim.AdamW: Adam with decoupled weight decay, default `weight_decay` 1e-2.
///
/// The parameter is first shrunk by `1 - lr * weight_decay`, then the Adam step of [`Adam`]
/// is applied (Loshchilov & Hutter, 2019). optax's `adamw` defaults to 1e-4 and scales
/// `wd * p` into the update instead: same math, different rounding.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct AdamW {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// Coefficients of the running averages of g and g² (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to the denominator (default 1e-8).
    pub eps: f64,
    /// Decoupled weight decay (default 1e-2).
    pub weight_decay: f64,
    /// AMSGrad variant (default false).
    pub amsgrad: bool,
    /// Maximize the objective (default false).
    pub maximize: bool,
    /// The format the state is kept in (default f32; bf16 or f16 halve its memory: each
    /// element is stored to nearest even after every update, the arithmetic staying f32).
    #[serde(skip_serializing_if = "super::is_f32")]
    pub state_format: crate::ElementFormat,
}

impl Default for AdamW {
    fn default() -> Self {
        AdamW {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 1e-2,
            amsgrad: false,
            maximize: false,
            state_format: crate::ElementFormat::F32,
        }
    }
}

impl Adam {
    /// With learning rate `lr` and torch's other defaults.
    pub fn new(lr: f64) -> Self {
        Adam { lr, ..Self::default() }
    }
    /// Sets `betas`.
    pub fn with_betas(self, beta1: f64, beta2: f64) -> Self {
        Adam { betas: (beta1, beta2), ..self }
    }
}
setters!(Adam {
    with_eps => eps: f64,
    with_weight_decay => weight_decay: f64,
    with_amsgrad => amsgrad: bool,
    with_maximize => maximize: bool,
    with_decoupled_weight_decay => decoupled_weight_decay: bool,
});

impl AdamW {
    /// With learning rate `lr` and torch's other defaults.
    pub fn new(lr: f64) -> Self {
        AdamW { lr, ..Self::default() }
    }
    /// Sets `betas`.
    pub fn with_betas(self, beta1: f64, beta2: f64) -> Self {
        AdamW { betas: (beta1, beta2), ..self }
    }
}
setters!(AdamW {
    with_eps => eps: f64,
    with_weight_decay => weight_decay: f64,
    with_amsgrad => amsgrad: bool,
    with_maximize => maximize: bool,
});

impl From<&AdamW> for Adam {
    fn from(w: &AdamW) -> Adam {
        Adam {
            lr: w.lr,
            betas: w.betas,
            eps: w.eps,
            weight_decay: w.weight_decay,
            amsgrad: w.amsgrad,
            maximize: w.maximize,
            decoupled_weight_decay: true,
            state_format: w.state_format,
        }
    }
}

static KERNEL: Kernel = Kernel {
    family: "adam",
    source: concat!(include_str!("../../shaders/adam_moments.wgsl"), include_str!("../../shaders/adam.wgsl")),
    state: &[
        StateSlot { role: "m", torch_name: "exp_avg", signed: true },
        StateSlot { role: "v", torch_name: "exp_avg_sq", signed: false },
        StateSlot { role: "v_max", torch_name: "max_exp_avg_sq", signed: false },
    ],
    // L2 fma or decay mul (2), lerp sub + fma (1 + 2), v: three mul and an add (4),
    // sqrt (5), `/ bc2` (3), `+ eps` (1), `step_size * m` (1), `/ denom` (3), `p +` (1).
    scalar_size: size_of::<Scalars>(),
    step_error_budget: 23.0,
    stages: crate::step::ELEMENTWISE,
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Scalars {
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    neg_step_size: f32,
    bias_correction2_sqrt: f32,
    eps: f32,
    weight_decay: f32,
    decay: f32,
}

impl Adam {
    /// torch's host arithmetic: f64 throughout (`beta ** step` with a float step), one
    /// rounding to f32 per scalar.
    fn host_scalars(&self, step: u64) -> Scalars {
        let (b1, b2) = self.betas;
        let t = step as f64;
        let bias_correction1 = 1.0 - b1.powf(t);
        let bias_correction2 = 1.0 - b2.powf(t);
        Scalars {
            one_minus_beta1: (1.0 - b1) as f32,
            beta2: b2 as f32,
            one_minus_beta2: (1.0 - b2) as f32,
            neg_step_size: (-(self.lr / bias_correction1)) as f32,
            bias_correction2_sqrt: bias_correction2.sqrt() as f32,
            eps: self.eps as f32,
            weight_decay: self.weight_decay as f32,
            decay: (1.0 - self.lr * self.weight_decay) as f32,
        }
    }

    fn moments(&self, s: &Scalars) -> AdamMoments {
        AdamMoments::new(
            self.maximize,
            self.decoupled_weight_decay,
            self.weight_decay,
            s.decay,
            s.weight_decay,
            s.one_minus_beta1,
            s.beta2,
            s.one_minus_beta2,
        )
    }
}

impl Optimizer for Adam {
    super::cycles_beta1!();
    state_format_methods!();
    common_methods!(KERNEL);
    fn name(&self) -> &'static str {
        "Adam"
    }
    fn reference(&self) -> &'static str {
        if self.decoupled_weight_decay { "torch.optim.Adam(decoupled_weight_decay=True)" } else { "torch.optim.Adam" }
    }
    fn validate(&self) -> Result<()> {
        check_adam_like(self.name(), self.lr, self.eps, self.betas, self.weight_decay)
    }
    fn uses_state(&self, slot: usize) -> bool {
        slot < 2 || (slot == 2 && self.amsgrad)
    }
    fn constants(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("MAXIMIZE", flag(self.maximize)),
            ("WEIGHT_DECAY", flag(self.weight_decay != 0.0)),
            ("DECOUPLED", flag(self.decoupled_weight_decay)),
            ("AMSGRAD", flag(self.amsgrad)),
        ]
    }
    fn scalars(&self, step: u64) -> ScalarBlock {
        pack(&self.host_scalars(step))
    }
    /// The CPU definition of one element's update (`shaders/adam.wgsl` is the GPU one).
    fn update_cpu(&self, step: u64, p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>) {
        crate::simd::dispatch!(Adam, self.update_elements(step, p, g, state))
    }
}

impl Adam {
    /// The update itself, inlined into both versions [`crate::simd::dispatch`] compiles.
    #[inline(always)]
    pub(crate) fn update_elements(&self, step: u64, p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>) {
        let s = self.host_scalars(step);
        let front = self.moments(&s);
        // `move`: the closure owns copies of the flags and scalars, so the compiler knows the
        // stores to p, m, v cannot change them and vectorises the loop. AMSGrad is its own
        // loop: a maximum carried through a scratch value would keep the other scalar.
        let finish = move |p: &mut f32, param: f32, m: f32, second: f32| {
            let denom = second.sqrt() / s.bias_correction2_sqrt + s.eps;
            *p = param + (s.neg_step_size * m) / denom;
        };
        if self.amsgrad {
            each(p, g, state, move |p, grad, [m, v, v_max]| {
                let (param, _) = front.apply(*p, grad, m, v);
                *v_max = nan_max(*v_max, *v);
                finish(p, param, *m, *v_max);
            });
        } else {
            each(p, g, state, move |p, grad, [m, v]| {
                let (param, _) = front.apply(*p, grad, m, v);
                finish(p, param, *m, *v);
            });
        }
    }
}

impl Optimizer for AdamW {
    super::cycles_beta1!();
    state_format_methods!();
    fn name(&self) -> &'static str {
        "AdamW"
    }
    fn reference(&self) -> &'static str {
        "torch.optim.AdamW"
    }
    fn validate(&self) -> Result<()> {
        check_adam_like(self.name(), self.lr, self.eps, self.betas, self.weight_decay)
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn kernel(&self) -> &'static Kernel {
        &KERNEL
    }
    fn uses_state(&self, slot: usize) -> bool {
        Adam::from(self).uses_state(slot)
    }
    fn constants(&self) -> Vec<(&'static str, f64)> {
        Adam::from(self).constants()
    }
    fn scalars(&self, step: u64) -> ScalarBlock {
        Adam::from(self).scalars(step)
    }
    fn update_cpu(&self, step: u64, p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>) {
        Adam::from(self).update_cpu(step, p, g, state)
    }
    fn clone_box(&self) -> Box<dyn Optimizer> {
        Box::new(self.clone())
    }
    fn config(&self) -> serde_json::Value {
        super::config_of(self)
    }
}

with_state_format!(Adam);

with_state_format!(AdamW);
