//! RAdam, as torch.optim.RAdam.

use super::{
    AdamMoments, Kernel, Optimizer, ScalarBlock, StateSlices, StateSlot, check_adam_like, common_methods, each, flag,
    pack, setters, state_format_methods, with_state_format,
};
use crate::error::Result;

/// RAdam, torch.optim.RAdam (single-tensor path): Adam whose adaptive term is switched on,
/// and rectified, once the variance estimate is tractable.
///
/// ```text
/// t = t + 1;  g = maximize ? -grad : grad
/// if weight_decay != 0:  decoupled ? p = p * (1 - lr*wd) : g = g + wd * p
/// m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g²
/// rho_inf = 2 / (1 - beta2) - 1;  rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)
/// rho_t > 5:  p = p - lr * m / (1 - beta1^t) * sqrt(1 - beta2^t) / (sqrt(v) + eps) * rect_t
/// otherwise:  p = p - lr * m / (1 - beta1^t)
/// ```
/// torch's threshold is `rho_t > 5` (the paper's is 4, the authors' code and optax use
/// `>= 5`); eps is added before the bias correction. With beta2 = 0.999 steps 1-5 are
/// unrectified. State: `exp_avg`, `exp_avg_sq`. Liu et al. (2020).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RAdam {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// Coefficients of the running averages (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to the denominator (default 1e-8).
    pub eps: f64,
    /// Weight decay (default 0; L2 unless `decoupled_weight_decay`).
    pub weight_decay: f64,
    /// Decoupled weight decay, as AdamW (default false).
    pub decoupled_weight_decay: bool,
    /// Maximize the objective (default false).
    pub maximize: bool,
    /// The format the state is kept in (default f32; bf16 or f16 halve its memory, 8-bit
    /// blocks quarter it: see [`crate::ElementFormat`]; the arithmetic stays f32).
    #[serde(skip_serializing_if = "super::is_f32")]
    pub state_format: crate::ElementFormat,
}

impl Default for RAdam {
    fn default() -> Self {
        RAdam {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            maximize: false,
            state_format: crate::ElementFormat::F32,
        }
    }
}

impl RAdam {
    /// With learning rate `lr` and torch's other defaults.
    pub fn new(lr: f64) -> Self {
        RAdam { lr, ..Self::default() }
    }
    /// Sets `betas`.
    pub fn with_betas(self, beta1: f64, beta2: f64) -> Self {
        RAdam { betas: (beta1, beta2), ..self }
    }
}
setters!(RAdam {
    with_eps => eps: f64,
    with_weight_decay => weight_decay: f64,
    with_decoupled_weight_decay => decoupled_weight_decay: bool,
    with_maximize => maximize: bool,
});

static KERNEL: Kernel = Kernel {
    family: "radam",
    source: concat!(include_str!("../../shaders/adam_moments.wgsl"), include_str!("../../shaders/radam.wgsl")),
    state: &[
        StateSlot { role: "m", torch_name: "exp_avg", signed: true },
        StateSlot { role: "v", torch_name: "exp_avg_sq", signed: false },
    ],
    // L2 fma (2), lerp (3), v (4), m / bc1 (3), sqrt (5), + eps (1), 1 / a (3), three mul (3),
    // subtraction (1).
    scalar_size: size_of::<Scalars>(),
    step_error_budget: 25.0,
    stages: crate::step::ELEMENTWISE,
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Scalars {
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    bias_correction1: f32,
    bias_correction2_sqrt: f32,
    eps: f32,
    lr: f32,
    rect: f32,
    weight_decay: f32,
    decay: f32,
    rectified: u32,
}

impl RAdam {
    fn host_scalars(&self, step: u64) -> Scalars {
        let (b1, b2) = self.betas;
        let t = step as f64;
        let bias_correction2 = 1.0 - b2.powf(t);
        let rho_inf = 2.0 / (1.0 - b2) - 1.0;
        let rho_t = rho_inf - 2.0 * t * b2.powf(t) / bias_correction2;
        let rectified = rho_t > 5.0;
        let rect = if rectified {
            ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)).powf(0.5)
        } else {
            1.0
        };
        Scalars {
            one_minus_beta1: (1.0 - b1) as f32,
            beta2: b2 as f32,
            one_minus_beta2: (1.0 - b2) as f32,
            bias_correction1: (1.0 - b1.powf(t)) as f32,
            bias_correction2_sqrt: bias_correction2.powf(0.5) as f32,
            eps: self.eps as f32,
            lr: self.lr as f32,
            rect: rect as f32,
            weight_decay: self.weight_decay as f32,
            decay: (1.0 - self.lr * self.weight_decay) as f32,
            rectified: u32::from(rectified),
        }
    }
}

impl Optimizer for RAdam {
    super::cycles_beta1!();
    state_format_methods!();
    common_methods!(KERNEL);
    fn name(&self) -> &'static str {
        "RAdam"
    }
    fn reference(&self) -> &'static str {
        "torch.optim.RAdam"
    }
    fn validate(&self) -> Result<()> {
        check_adam_like(self.name(), self.lr, self.eps, self.betas, self.weight_decay)
    }
    fn constants(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("MAXIMIZE", flag(self.maximize)),
            ("WEIGHT_DECAY", flag(self.weight_decay != 0.0)),
            ("DECOUPLED", flag(self.decoupled_weight_decay)),
        ]
    }
    fn scalars(&self, step: u64) -> ScalarBlock {
        pack(&self.host_scalars(step))
    }
    /// The CPU definition of one element's update (`shaders/radam.wgsl` is the GPU one).
    fn update_cpu(&self, step: u64, p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>) {
        crate::simd::dispatch!(RAdam, self.update_elements(step, p, g, state))
    }
}

impl RAdam {
    /// The update itself, inlined into both versions [`crate::simd::dispatch`] compiles.
    #[inline(always)]
    pub(crate) fn update_elements(&self, step: u64, p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>) {
        let s = self.host_scalars(step);
        let front = AdamMoments::new(
            self.maximize,
            self.decoupled_weight_decay,
            self.weight_decay,
            s.decay,
            s.weight_decay,
            s.one_minus_beta1,
            s.beta2,
            s.one_minus_beta2,
        );
        each(p, g, state, move |p, grad, [m, v]| {
            let (param, _) = front.apply(*p, grad, m, v);
            let mut u = (*m / s.bias_correction1) * s.lr;
            if s.rectified != 0 {
                let adaptive = (1.0 / (v.sqrt() + s.eps)) * s.bias_correction2_sqrt;
                u = (u * adaptive) * s.rect;
            }
            *p = param - u;
        });
    }
}

with_state_format!(RAdam);
