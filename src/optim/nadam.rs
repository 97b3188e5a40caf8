//! NAdam, as torch.optim.NAdam.

use std::sync::Mutex;

use super::{
    AdamMoments, Kernel, Optimizer, ScalarBlock, StateSlices, StateSlot, check_adam_like, check_non_negative,
    common_methods, each, flag, pack, setters, state_format_methods, with_state_format,
};
use crate::error::Result;

/// NAdam, torch.optim.NAdam (single-tensor path): Adam with Nesterov momentum and Dozat's
/// momentum schedule `mu_t = beta1 * (1 - 0.5 * 0.96^(t * momentum_decay))`.
///
/// ```text
/// t = t + 1;  g = maximize ? -grad : grad
/// if weight_decay != 0:  decoupled ? p = p * (1 - lr*wd) : g = g + wd * p
/// mu_product = mu_product * mu_t                         # f32, as torch's state tensor
/// m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g²
/// denom = sqrt(v / (1 - beta2^t)) + eps
/// p = p - lr * (1 - mu_t) / (1 - mu_product) * g / denom
/// p = p - lr * mu_{t+1} / (1 - mu_product * mu_{t+1}) * m / denom
/// ```
/// State: `exp_avg`, `exp_avg_sq` per element and the scalar `mu_product`. Dozat (2016).
/// optax's `nadam` has a constant beta1 and no running product.
#[derive(Clone, PartialEq, serde::Serialize)]
pub struct NAdam {
    /// Learning rate (default 2e-3).
    pub lr: f64,
    /// Coefficients of the running averages (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to the denominator (default 1e-8).
    pub eps: f64,
    /// Weight decay (default 0; L2 unless `decoupled_weight_decay`).
    pub weight_decay: f64,
    /// Momentum schedule rate psi (default 4e-3).
    pub momentum_decay: f64,
    /// Decoupled weight decay, as AdamW (default false).
    pub decoupled_weight_decay: bool,
    /// Maximize the objective (default false).
    pub maximize: bool,
    #[serde(skip)]
    mu_product: MuProduct,
    /// The format the state is kept in (default f32; bf16 or f16 halve its memory, 8-bit
    /// blocks quarter it: see [`crate::ElementFormat`]; the arithmetic stays f32).
    #[serde(skip_serializing_if = "super::is_f32")]
    pub state_format: crate::ElementFormat,
}

/// The configuration alone: the `mu_product` cache is no part of it (checkpoints compare
/// configurations by this text).
impl std::fmt::Debug for NAdam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NAdam")
            .field("lr", &self.lr)
            .field("betas", &self.betas)
            .field("eps", &self.eps)
            .field("weight_decay", &self.weight_decay)
            .field("momentum_decay", &self.momentum_decay)
            .field("decoupled_weight_decay", &self.decoupled_weight_decay)
            .field("maximize", &self.maximize)
            .finish()
    }
}

impl Default for NAdam {
    fn default() -> Self {
        NAdam {
            lr: 2e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            momentum_decay: 4e-3,
            decoupled_weight_decay: false,
            maximize: false,
            mu_product: MuProduct::default(),
            state_format: crate::ElementFormat::F32,
        }
    }
}

impl NAdam {
    /// With learning rate `lr` and torch's other defaults.
    pub fn new(lr: f64) -> Self {
        NAdam { lr, ..Self::default() }
    }
    /// Sets `betas`.
    pub fn with_betas(self, beta1: f64, beta2: f64) -> Self {
        NAdam { betas: (beta1, beta2), ..self }
    }

    fn mu(&self, t: f64) -> f64 {
        self.betas.0 * (1.0 - 0.5 * 0.96f64.powf(t * self.momentum_decay))
    }
}
setters!(NAdam {
    with_eps => eps: f64,
    with_weight_decay => weight_decay: f64,
    with_momentum_decay => momentum_decay: f64,
    with_decoupled_weight_decay => decoupled_weight_decay: bool,
    with_maximize => maximize: bool,
});

/// torch's `mu_product`, a float32 tensor multiplied by `mu_t` in place every step. It is a
/// function of the step alone; the last `(step, product)` is cached so that consecutive steps
/// cost one multiplication, not `t`.
#[derive(Default)]
struct MuProduct(Mutex<Option<(u64, f32)>>);

impl Clone for MuProduct {
    fn clone(&self) -> Self {
        MuProduct(Mutex::new(*self.0.lock().unwrap_or_else(|e| e.into_inner())))
    }
}

impl PartialEq for MuProduct {
    /// A cache: never part of an optimizer's identity.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl NAdam {
    /// `mu_product` after step `step` (1.0 before the first).
    fn mu_product(&self, step: u64) -> f32 {
        let mut cache = self.mu_product.0.lock().unwrap_or_else(|e| e.into_inner());
        let (mut t, mut product) = match *cache {
            Some((t, p)) if t <= step => (t, p),
            _ => (0, 1.0f32),
        };
        while t < step {
            t += 1;
            product *= self.mu(t as f64) as f32;
        }
        *cache = Some((t, product));
        product
    }
}

static KERNEL: Kernel = Kernel {
    family: "nadam",
    source: concat!(include_str!("../../shaders/adam_moments.wgsl"), include_str!("../../shaders/nadam.wgsl")),
    state: &[
        StateSlot { role: "m", torch_name: "exp_avg", signed: true },
        StateSlot { role: "v", torch_name: "exp_avg_sq", signed: false },
    ],
    // L2 fma (2), lerp (3), v (4), div (3), sqrt (5), + eps (1), two addcdiv of mul, div, add (10).
    scalar_size: size_of::<Scalars>(),
    step_error_budget: 28.0,
    stages: crate::step::ELEMENTWISE,
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Scalars {
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    bias_correction2: f32,
    eps: f32,
    weight_decay: f32,
    decay: f32,
    grad_coef: f32,
    exp_avg_coef: f32,
}

impl NAdam {
    fn host_scalars(&self, step: u64) -> Scalars {
        let (b1, b2) = self.betas;
        let t = step as f64;
        let mu = self.mu(t);
        let mu_next = self.mu(t + 1.0);
        let product = f64::from(self.mu_product(step));
        Scalars {
            one_minus_beta1: (1.0 - b1) as f32,
            beta2: b2 as f32,
            one_minus_beta2: (1.0 - b2) as f32,
            bias_correction2: (1.0 - b2.powf(t)) as f32,
            eps: self.eps as f32,
            weight_decay: self.weight_decay as f32,
            decay: (1.0 - self.lr * self.weight_decay) as f32,
            grad_coef: (-self.lr * (1.0 - mu) / (1.0 - product)) as f32,
            exp_avg_coef: ((-self.lr * mu_next) / (1.0 - product * mu_next)) as f32,
        }
    }
}

impl Optimizer for NAdam {
    state_format_methods!();
    fn scalar_state(&self, step: u64) -> Vec<(&'static str, f32)> {
        vec![("step", step as f32), ("mu_product", self.mu_product(step))]
    }
    /// `mu_product` must be the step's: recomputed up to 2^20 steps (a millisecond); beyond,
    /// taken as saved if it can be a product of factors in (0, 1], so that the next step
    /// costs one multiplication whatever the step read from the file.
    fn restore_scalar_state(&self, step: u64, saved: &[(String, f32)]) -> std::result::Result<(), String> {
        let get = |name: &str| saved.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        let names: Vec<&str> = saved.iter().map(|(n, _)| n.as_str()).collect();
        if names != ["mu_product", "step"] {
            return Err(format!("NAdam keeps mu_product and step per parameter, the checkpoint {names:?}"));
        }
        if get("step") != Some(step as f32) {
            return Err(format!("the per-parameter step {:?} is not the group's step {step}", get("step")));
        }
        const RECOMPUTED: u64 = 1 << 20;
        match get("mu_product") {
            Some(m) if step <= RECOMPUTED && m.to_bits() != self.mu_product(step).to_bits() => {
                Err(format!("mu_product {m} is not that of step {step} ({})", self.mu_product(step)))
            }
            Some(m) if m.is_finite() && m > 0.0 && m <= 1.0 && (step > 0 || m == 1.0) => {
                *self.mu_product.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((step, m));
                Ok(())
            }
            m => Err(format!("mu_product {m:?} after step {step} is not a product of factors in (0, 1]")),
        }
    }
    common_methods!(KERNEL);
    fn name(&self) -> &'static str {
        "NAdam"
    }
    fn reference(&self) -> &'static str {
        "torch.optim.NAdam"
    }
    fn validate(&self) -> Result<()> {
        let n = self.name();
        check_adam_like(n, self.lr, self.eps, self.betas, self.weight_decay)?;
        check_non_negative(n, "momentum_decay", self.momentum_decay)
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
    /// The CPU definition of one element's update (`shaders/nadam.wgsl` is the GPU one).
    fn update_cpu(&self, step: u64, p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>) {
        crate::simd::dispatch!(NAdam, self.update_elements(step, p, g, state))
    }
}

impl NAdam {
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
            let (param, d) = front.apply(*p, grad, m, v);
            let denom = (*v / s.bias_correction2).sqrt() + s.eps;
            let param = param + (s.grad_coef * d) / denom;
            *p = param + (s.exp_avg_coef * *m) / denom;
        });
    }
}

with_state_format!(NAdam);
