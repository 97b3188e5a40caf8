//! Learning-rate schedules: pure functions of the step, with torch.optim.lr_scheduler's names
//! and defaults (and Keras' cosine decay with restarts), evaluated in closed form.
//!
//! A schedule gives the learning rate of optimizer step `k` (0-based: the first step uses
//! `k = 0`), as when a torch scheduler is stepped once per iteration. An optimizer with a
//! schedule ([`GpuOptimizer::set_schedule`](crate::GpuOptimizer::set_schedule)) evaluates it
//! for every step it records, K steps per submit included: the learning rates go into the
//! GPU's step table with the other per-step scalars, with no host round trip.

use std::f64::consts::PI;

use crate::error::{Error, Result};

mod plateau;
pub use plateau::{PlateauMode, ReduceLrOnPlateau, ThresholdMode};

/// A learning-rate schedule.
pub trait Schedule: std::fmt::Debug + Send + Sync {
    /// The learning rate of 0-based step `k`, for the optimizer's initial learning rate `base`.
    fn lr(&self, base: f64, k: u64) -> f64;
    /// A boxed copy.
    fn clone_box(&self) -> Box<dyn Schedule>;
    /// The schedule and every parameter as structured data (serde): `{"StepLr": {…}}`.
    fn config(&self) -> serde_json::Value;
    /// The momentum of 0-based step `k` where the schedule cycles it (torch's OneCycleLR and
    /// CyclicLR with `cycle_momentum`: the optimizer's `momentum`, or `betas[0]`); `None`
    /// (the default) leaves the momentum alone.
    fn momentum(&self, k: u64) -> Option<f64> {
        let _ = k;
        None
    }
}

impl Clone for Box<dyn Schedule> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

impl<S: Schedule + 'static> From<S> for Box<dyn Schedule> {
    fn from(s: S) -> Self {
        Box::new(s)
    }
}

/// A schedule as an optimizer holds it: the schedule, its base learning rate (torch's
/// `initial_lr`) and the step it starts after.
pub(crate) type ScheduleSlot = Option<(Box<dyn Schedule>, f64, u64)>;

/// What a schedule sets for one step: the learning rate, and the momentum where it cycles it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Scheduled {
    pub lr: f64,
    pub momentum: Option<f64>,
}

impl Scheduled {
    /// What `o` holds now.
    pub fn of(o: &dyn crate::optim::Optimizer) -> Self {
        Scheduled { lr: o.lr(), momentum: o.momentum() }
    }

    /// What `schedule` gives 0-based step `k` from base learning rate `base`.
    pub fn at(schedule: &dyn Schedule, base: f64, k: u64) -> Self {
        Scheduled { lr: schedule.lr(base, k), momentum: schedule.momentum(k) }
    }

    /// Puts them into `o` (allocation-free, so a schedule may call it every step).
    pub fn put(self, o: &mut dyn crate::optim::Optimizer) {
        o.set_lr(self.lr);
        if let Some(m) = self.momentum {
            o.set_momentum(m);
        }
    }

    /// Puts them into `o` if it accepts them; otherwise leaves it as it was.
    pub fn put_checked(self, o: &mut dyn crate::optim::Optimizer) -> Result<()> {
        let old = Scheduled::of(o);
        self.put(o);
        o.validate().inspect_err(|_| old.put(o))
    }
}

/// A schedule attached to an optimizer at `step` — checked first: the learning rate it gives
/// the next step must be one the optimizer accepts, so nothing invalid is ever attached.
pub(crate) fn attach(
    o: &dyn crate::optim::Optimizer,
    step: u64,
    schedule: Option<Box<dyn Schedule>>,
) -> Result<ScheduleSlot> {
    let Some(s) = schedule else { return Ok(None) };
    let base = o.lr();
    if s.momentum(0).is_some() {
        let Some(m) = o.momentum() else {
            return Err(invalid(format!(
                "{} cycles the momentum, and {} has none to cycle (momentum or betas[0]; NAdam's and the \
                 schedule-free optimizers' steps depend on its history): build the schedule without \
                 with_momentum_cycle",
                s.config(),
                o.name()
            )));
        };
        // The momentum's state must already be kept (SGD and RMSprop keep none at 0), and
        // every momentum cycled is above 0, so none is added or dropped mid-run.
        if m == 0.0 {
            return Err(invalid(format!(
                "{} cycles the momentum of {}, whose momentum is {m}: build the optimizer with a momentum in \
                 (0, 1), so that it keeps its momentum state",
                s.config(),
                o.name()
            )));
        }
    }
    let mut probe = o.clone_box();
    Scheduled::at(&*s, base, 0).put_checked(&mut *probe)?;
    Ok(Some((s, base, step)))
}

fn invalid(message: String) -> Error {
    Error::InvalidHyperParameter { optimizer: "lr_scheduler", message }
}

/// A decay factor must be a positive finite number: a negative one makes the optimizer
/// climb, a NaN makes every parameter NaN.
fn check_gamma(schedule: &str, gamma: f64) -> Result<()> {
    if gamma.is_finite() && gamma > 0.0 {
        Ok(())
    } else {
        Err(invalid(format!("{schedule} gamma must be positive and finite, got {gamma}")))
    }
}

/// A learning-rate floor must be finite and >= 0.
fn check_floor(schedule: &str, eta_min: f64) -> Result<()> {
    if eta_min.is_finite() && eta_min >= 0.0 {
        Ok(())
    } else {
        Err(invalid(format!("{schedule} eta_min must be >= 0 and finite, got {eta_min}")))
    }
}

macro_rules! schedule {
    ($t:ident, |$s:ident, $base:ident, $k:ident| $body:expr, momentum |$ms:ident, $mk:ident| $mbody:expr) => {
        impl Schedule for $t {
            fn lr(&self, $base: f64, $k: u64) -> f64 {
                let $s = self;
                $body
            }
            fn clone_box(&self) -> Box<dyn Schedule> {
                Box::new(self.clone())
            }
            fn config(&self) -> serde_json::Value {
                serde_json::json!({ stringify!($t): crate::optim::config_of(self) })
            }
            fn momentum(&self, $mk: u64) -> Option<f64> {
                let $ms = self;
                $mbody
            }
        }
    };
    ($t:ident, |$s:ident, $base:ident, $k:ident| $body:expr) => {
        schedule!($t, |$s, $base, $k| $body, momentum |_s, _k| None);
    };
}

/// torch `StepLR(step_size, gamma=0.1)`: `base * gamma^(k / step_size)`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StepLr {
    /// Steps between decays.
    step_size: u64,
    /// Factor per decay (default 0.1).
    gamma: f64,
}

impl StepLr {
    /// With torch's default gamma 0.1.
    pub fn new(step_size: u64) -> Result<Self> {
        Self::with_gamma(step_size, 0.1)
    }
    /// With a decay factor.
    pub fn with_gamma(step_size: u64, gamma: f64) -> Result<Self> {
        if step_size == 0 {
            return Err(invalid("StepLR step_size must be a positive integer".into()));
        }
        check_gamma("StepLR", gamma)?;
        Ok(StepLr { step_size, gamma })
    }
}
schedule!(StepLr, |s, base, k| base * s.gamma.powf((k / s.step_size) as f64));

/// torch `MultiStepLR(milestones, gamma=0.1)`: `base * gamma^(number of milestones <= k)`
/// (a repeated milestone counts twice, as in torch).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MultiStepLr {
    /// Steps at which the learning rate is multiplied by gamma.
    milestones: Vec<u64>,
    /// Factor per milestone (default 0.1).
    gamma: f64,
}
impl MultiStepLr {
    /// Multiplies by `gamma` at each milestone (torch's default gamma is 0.1).
    pub fn new(milestones: Vec<u64>, gamma: f64) -> Result<Self> {
        check_gamma("MultiStepLR", gamma)?;
        Ok(MultiStepLr { milestones, gamma })
    }
}
schedule!(MultiStepLr, |s, base, k| base * s.gamma.powi(s.milestones.iter().filter(|&&m| m <= k).count() as i32));

/// torch `ExponentialLR(gamma)`: `base * gamma^k`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ExponentialLr {
    /// Factor per step.
    gamma: f64,
}
impl ExponentialLr {
    /// Multiplies by `gamma` every step.
    pub fn new(gamma: f64) -> Result<Self> {
        check_gamma("ExponentialLR", gamma)?;
        Ok(ExponentialLr { gamma })
    }
}
schedule!(ExponentialLr, |s, base, k| base * s.gamma.powf(k as f64));

/// torch `CosineAnnealingLR(T_max, eta_min=0)`:
/// `eta_min + (base - eta_min) * (1 + cos(pi * k / T_max)) / 2` (no clamp: past `T_max` it
/// rises again, as torch's).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CosineAnnealingLr {
    /// Half period, in steps.
    t_max: u64,
    /// Minimum learning rate (default 0).
    eta_min: f64,
}
impl CosineAnnealingLr {
    /// A half period of `t_max` steps (positive) down to `eta_min` (finite, >= 0).
    pub fn new(t_max: u64, eta_min: f64) -> Result<Self> {
        if t_max == 0 {
            return Err(invalid("CosineAnnealingLR T_max must be a positive integer, got 0".into()));
        }
        check_floor("CosineAnnealingLR", eta_min)?;
        Ok(CosineAnnealingLr { t_max, eta_min })
    }
}
schedule!(CosineAnnealingLr, |s, base, k| s.eta_min
    + (base - s.eta_min) * (1.0 + (PI * k as f64 / s.t_max as f64).cos()) / 2.0);

/// torch `LinearLR(start_factor=1/3, end_factor=1.0, total_iters=5)`: the factor goes
/// linearly from `start_factor` to `end_factor` over `total_iters` steps (a linear warmup).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LinearLr {
    /// Factor at step 0, in (0, 1].
    start_factor: f64,
    /// Factor from `total_iters` on, in [0, 1].
    end_factor: f64,
    /// Steps of the ramp.
    total_iters: u64,
}

impl LinearLr {
    /// torch's checks and messages.
    pub fn new(start_factor: f64, end_factor: f64, total_iters: u64) -> Result<Self> {
        if !(start_factor > 0.0 && start_factor <= 1.0) {
            return Err(invalid(
                "Starting multiplicative factor expected to be greater than 0 and less or equal to 1.".into(),
            ));
        }
        if !(0.0..=1.0).contains(&end_factor) {
            return Err(invalid("Ending multiplicative factor expected to be between 0 and 1.".into()));
        }
        Ok(LinearLr { start_factor, end_factor, total_iters })
    }
}
impl Default for LinearLr {
    fn default() -> Self {
        LinearLr { start_factor: 1.0 / 3.0, end_factor: 1.0, total_iters: 5 }
    }
}
schedule!(LinearLr, |s, base, k| {
    let t = k.min(s.total_iters) as f64;
    let ramp = if s.total_iters == 0 { 1.0 } else { t / s.total_iters as f64 };
    base * (s.start_factor + (s.end_factor - s.start_factor) * ramp)
});

/// torch `CosineAnnealingWarmRestarts(T_0, T_mult=1, eta_min=0)` (SGDR): cosine from `base`
/// to `eta_min` over `T_i` steps, then a restart with `T_i *= T_mult`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CosineAnnealingWarmRestarts {
    /// Length of the first cycle.
    t_0: u64,
    /// Growth factor of each cycle (an integer >= 1).
    t_mult: u64,
    /// Minimum learning rate.
    eta_min: f64,
}

impl CosineAnnealingWarmRestarts {
    /// torch's checks and messages.
    pub fn new(t_0: u64, t_mult: u64, eta_min: f64) -> Result<Self> {
        if t_0 == 0 {
            return Err(invalid(format!("Expected positive integer T_0, but got {t_0}")));
        }
        if t_mult == 0 {
            return Err(invalid(format!("Expected integer T_mult >= 1, but got {t_mult}")));
        }
        check_floor("CosineAnnealingWarmRestarts", eta_min)?;
        Ok(CosineAnnealingWarmRestarts { t_0, t_mult, eta_min })
    }

    /// (position in the cycle, cycle length) at step `k`, by an integer loop (a float log
    /// misplaces exact cycle boundaries).
    fn cycle(&self, k: u64) -> (u64, u64) {
        let (mut start, mut len) = (0u64, self.t_0);
        while k >= start + len {
            start += len;
            len = len.saturating_mul(self.t_mult);
        }
        (k - start, len)
    }
}
schedule!(CosineAnnealingWarmRestarts, |s, base, k| {
    let (t_cur, t_i) = s.cycle(k);
    s.eta_min + (base - s.eta_min) * (1.0 + (PI * t_cur as f64 / t_i as f64).cos()) / 2.0
});

/// Keras `CosineDecayRestarts(initial_learning_rate, first_decay_steps, t_mul=2.0,
/// m_mul=1.0, alpha=0.0)`, evaluated in f32 as Keras does, with `base` as the initial
/// learning rate. The `alpha` floor is not scaled by `m_mul^i`; it never clamps.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CosineDecayRestarts {
    /// Length of the first cycle.
    first_decay_steps: u64,
    /// Cycle-length factor (default 2).
    t_mul: f64,
    /// Peak factor per restart (default 1).
    m_mul: f64,
    /// Floor as a fraction of the initial learning rate (default 0).
    alpha: f64,
}

impl CosineDecayRestarts {
    /// Keras' defaults: `t_mul` 2, `m_mul` 1, `alpha` 0.
    pub fn new(first_decay_steps: u64) -> Result<Self> {
        Self::with_shape(first_decay_steps, 2.0, 1.0, 0.0)
    }
    /// Cycles growing by `t_mul` (> 0), peaks scaled by `m_mul` (>= 0) per restart, the floor
    /// `alpha` (in [0, 1]) of the initial learning rate.
    pub fn with_shape(first_decay_steps: u64, t_mul: f64, m_mul: f64, alpha: f64) -> Result<Self> {
        if first_decay_steps == 0 {
            return Err(invalid("first_decay_steps must be > 0".into()));
        }
        if !(t_mul.is_finite() && t_mul > 0.0) {
            return Err(invalid(format!("CosineDecayRestarts t_mul must be positive and finite, got {t_mul}")));
        }
        if !(m_mul.is_finite() && m_mul >= 0.0) {
            return Err(invalid(format!("CosineDecayRestarts m_mul must be >= 0 and finite, got {m_mul}")));
        }
        if !(0.0..=1.0).contains(&alpha) {
            return Err(invalid(format!("CosineDecayRestarts alpha must be in [0, 1], got {alpha}")));
        }
        Ok(CosineDecayRestarts { first_decay_steps, t_mul, m_mul, alpha })
    }
}
schedule!(CosineDecayRestarts, |s, base, k| {
    let (t_mul, m_mul, alpha) = (s.t_mul as f32, s.m_mul as f32, s.alpha as f32);
    let f = k as f32 / s.first_decay_steps as f32;
    let (i, f) = if t_mul == 1.0 {
        let i = f.floor();
        (i, f - i)
    } else {
        let i = ((1.0 - f * (1.0 - t_mul)).ln() / t_mul.ln()).floor();
        (i, (f - (1.0 - t_mul.powf(i)) / (1.0 - t_mul)) / t_mul.powf(i))
    };
    let cosine = 0.5 * m_mul.powf(i) * (1.0 + (std::f32::consts::PI * f).cos());
    f64::from(base as f32 * ((1.0 - alpha) * cosine + alpha))
});

/// torch `OneCycleLR(max_lr, total_steps, pct_start=0.3, anneal_strategy='cos',
/// div_factor=25, final_div_factor=1e4, three_phase=False)`, learning rate only (as
/// `cycle_momentum=False`): cosine from `max_lr / div_factor` up to `max_lr`, then down to
/// `max_lr / div_factor / final_div_factor`. It ignores the optimizer's own learning rate.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct OneCycleLr {
    /// Peak learning rate.
    max_lr: f64,
    /// Steps in the cycle.
    total_steps: u64,
    /// Fraction of the steps spent increasing (default 0.3).
    pct_start: f64,
    /// Initial learning rate = max_lr / div_factor (default 25).
    div_factor: f64,
    /// Minimum learning rate = initial / final_div_factor (default 1e4).
    final_div_factor: f64,
    /// (base_momentum, max_momentum) where the momentum cycles (torch's `cycle_momentum`).
    #[serde(skip_serializing_if = "Option::is_none")]
    cycle_momentum: Option<(f64, f64)>,
}

impl OneCycleLr {
    /// torch's defaults: `pct_start` 0.3, `div_factor` 25, `final_div_factor` 1e4.
    pub fn new(max_lr: f64, total_steps: u64) -> Result<Self> {
        Self::with_phases(max_lr, total_steps, 0.3, 25.0, 1e4)
    }
    /// torch's checks: a positive step count, `pct_start` in [0, 1]; and a positive finite
    /// peak and factors, so that every learning rate is one.
    pub fn with_phases(
        max_lr: f64,
        total_steps: u64,
        pct_start: f64,
        div_factor: f64,
        final_div_factor: f64,
    ) -> Result<Self> {
        if total_steps == 0 {
            return Err(invalid(format!("Expected positive integer total_steps, but got {total_steps}")));
        }
        if !(0.0..=1.0).contains(&pct_start) {
            return Err(invalid(format!("Expected float between 0 and 1 pct_start, but got {pct_start}")));
        }
        for (name, x) in [("max_lr", max_lr), ("div_factor", div_factor), ("final_div_factor", final_div_factor)] {
            if !(x.is_finite() && x > 0.0) {
                return Err(invalid(format!("OneCycleLR {name} must be positive and finite, got {x}")));
            }
        }
        Ok(OneCycleLr { max_lr, total_steps, pct_start, div_factor, final_div_factor, cycle_momentum: None })
    }

    /// Also cycles the optimizer's momentum (`momentum`, or `betas[0]`) against the learning
    /// rate, from `max_momentum` down to `base_momentum` while it rises and back while it
    /// falls: torch's `cycle_momentum=True` (its defaults: 0.85, 0.95). Both in (0, 1),
    /// `base_momentum <= max_momentum`.
    pub fn with_momentum_cycle(self, base_momentum: f64, max_momentum: f64) -> Result<Self> {
        check_momenta("OneCycleLR", base_momentum, max_momentum)?;
        Ok(OneCycleLr { cycle_momentum: Some((base_momentum, max_momentum)), ..self })
    }

    /// Whether step `k` is in the rising phase, and the fraction of its phase done.
    fn phase(&self, k: u64) -> (bool, f64) {
        // torch's phases: [0, pct_start * total - 1] up, then [.., total - 1] down.
        let up_end = self.pct_start * self.total_steps as f64 - 1.0;
        let down_end = self.total_steps as f64 - 1.0;
        let t = k as f64;
        // The fraction of a phase done; a phase of no length is done, and after the last step
        // (torch raises there) the schedule holds its final values.
        let done = |at: f64, length: f64| if length > 0.0 { (at / length).min(1.0) } else { 1.0 };
        if t <= up_end { (true, done(t, up_end)) } else { (false, done(t - up_end, down_end - up_end)) }
    }
}

/// torch's `_annealing_cos`.
fn anneal_cos(start: f64, end: f64, pct: f64) -> f64 {
    end + (start - end) / 2.0 * ((PI * pct).cos() + 1.0)
}

/// Momenta a schedule cycles between: in (0, 1), the base at most the maximum.
fn check_momenta(schedule: &str, base: f64, max: f64) -> Result<()> {
    // Above 0: a momentum of 0 would turn SGD's and RMSprop's momentum off mid-run.
    if !(base > 0.0 && base <= max && max < 1.0) {
        return Err(invalid(format!(
            "{schedule} momenta must satisfy 0 < base_momentum <= max_momentum < 1, got {base} and {max}"
        )));
    }
    Ok(())
}

schedule!(
    OneCycleLr,
    |s, _base, k| {
        let initial = s.max_lr / s.div_factor;
        let min = initial / s.final_div_factor;
        match s.phase(k) {
            (true, pct) => anneal_cos(initial, s.max_lr, pct),
            (false, pct) => anneal_cos(s.max_lr, min, pct),
        }
    },
    momentum | s,
    k | {
        let (base, max) = s.cycle_momentum?;
        Some(match s.phase(k) {
            (true, pct) => anneal_cos(max, base, pct),
            (false, pct) => anneal_cos(base, max, pct),
        })
    }
);

/// torch `ConstantLR(factor=1/3, total_iters=5)`: `base * factor` for the first
/// `total_iters` steps, then `base`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ConstantLr {
    /// Factor of the first steps, in [0, 1].
    factor: f64,
    /// Steps that take the factor.
    total_iters: u64,
}

impl ConstantLr {
    /// torch's check and message.
    pub fn new(factor: f64, total_iters: u64) -> Result<Self> {
        if !(0.0..=1.0).contains(&factor) {
            return Err(invalid("Constant multiplicative factor expected to be between 0 and 1.".into()));
        }
        Ok(ConstantLr { factor, total_iters })
    }
}
impl Default for ConstantLr {
    fn default() -> Self {
        ConstantLr { factor: 1.0 / 3.0, total_iters: 5 }
    }
}
schedule!(ConstantLr, |s, base, k| if k < s.total_iters { base * s.factor } else { base });

/// torch `PolynomialLR(total_iters=5, power=1.0)`:
/// `base * (1 - min(k, total_iters) / total_iters)^power`, zero from `total_iters` on.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PolynomialLr {
    /// Steps of the decay.
    total_iters: u64,
    /// Exponent of the decay.
    power: f64,
}

impl PolynomialLr {
    /// A decay over `total_iters` (positive) steps with exponent `power` (finite, >= 0: a
    /// negative one would raise the learning rate to infinity at the end).
    pub fn new(total_iters: u64, power: f64) -> Result<Self> {
        if total_iters == 0 {
            return Err(invalid("PolynomialLR total_iters must be a positive integer, got 0".into()));
        }
        if !(power.is_finite() && power >= 0.0) {
            return Err(invalid(format!("PolynomialLR power must be >= 0 and finite, got {power}")));
        }
        Ok(PolynomialLr { total_iters, power })
    }
}
impl Default for PolynomialLr {
    fn default() -> Self {
        PolynomialLr { total_iters: 5, power: 1.0 }
    }
}
schedule!(PolynomialLr, |s, base, k| base * (1.0 - k.min(s.total_iters) as f64 / s.total_iters as f64).powf(s.power));

/// torch `MultiplicativeLR(lr_lambda=lambda k: factor)` with a constant factor:
/// `base * factor^k` (torch multiplies from the second step on, so step 0 uses `base`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MultiplicativeLr {
    /// Factor per step.
    factor: f64,
}

impl MultiplicativeLr {
    /// Multiplies by `factor` (positive, finite) every step.
    pub fn new(factor: f64) -> Result<Self> {
        check_gamma("MultiplicativeLR", factor)?;
        Ok(MultiplicativeLr { factor })
    }
}
schedule!(MultiplicativeLr, |s, base, k| base * s.factor.powf(k as f64));

/// The shape of a [`CyclicLr`] cycle's amplitude, torch's `mode`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub enum CyclicMode {
    /// The same amplitude every cycle.
    Triangular,
    /// The amplitude halved every cycle.
    Triangular2,
    /// The amplitude scaled by `gamma^k` at step `k`.
    ExpRange {
        /// Factor per step, in (0, 1].
        gamma: f64,
    },
}

/// torch `CyclicLR(base_lr, max_lr, step_size_up=2000, step_size_down=None,
/// mode='triangular', gamma=1.0)`, learning rate only (as `cycle_momentum=False`): a triangle
/// from `base_lr` up to `max_lr` over `step_size_up` steps and back over `step_size_down`,
/// its height scaled by the mode. Like torch it ignores the optimizer's own learning rate.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CyclicLr {
    base_lr: f64,
    max_lr: f64,
    step_size_up: u64,
    step_size_down: u64,
    mode: CyclicMode,
    /// (base_momentum, max_momentum) where the momentum cycles (torch's `cycle_momentum`).
    #[serde(skip_serializing_if = "Option::is_none")]
    cycle_momentum: Option<(f64, f64)>,
}

impl CyclicLr {
    /// A triangle from `base_lr` to `max_lr` (finite, >= 0) over `step_size_up` steps up and as
    /// many down (torch's `step_size_down=None`).
    pub fn new(base_lr: f64, max_lr: f64, step_size_up: u64) -> Result<Self> {
        Self::with_shape(base_lr, max_lr, step_size_up, step_size_up, CyclicMode::Triangular)
    }
    /// With its own descent and mode: a cycle of `step_size_up + step_size_down` (positive)
    /// steps; `ExpRange`'s gamma in (0, 1].
    pub fn with_shape(
        base_lr: f64,
        max_lr: f64,
        step_size_up: u64,
        step_size_down: u64,
        mode: CyclicMode,
    ) -> Result<Self> {
        for (name, x) in [("base_lr", base_lr), ("max_lr", max_lr)] {
            if !(x.is_finite() && x >= 0.0) {
                return Err(invalid(format!("CyclicLR {name} must be >= 0 and finite, got {x}")));
            }
        }
        if step_size_up.checked_add(step_size_down).is_none_or(|t| t == 0) {
            return Err(invalid(format!(
                "CyclicLR needs a cycle of at least one step that fits u64, got step_size_up {step_size_up} and \
                 step_size_down {step_size_down}"
            )));
        }
        if let CyclicMode::ExpRange { gamma } = mode
            && !(gamma > 0.0 && gamma <= 1.0)
        {
            return Err(invalid(format!("CyclicLR exp_range gamma must be in (0, 1], got {gamma}")));
        }
        Ok(CyclicLr { base_lr, max_lr, step_size_up, step_size_down, mode, cycle_momentum: None })
    }

    /// Also cycles the optimizer's momentum (`momentum`, or `betas[0]`) against the learning
    /// rate, from `max_momentum` at the cycle's ends to `base_momentum` at its peak: torch's
    /// `cycle_momentum=True` (its defaults: 0.8, 0.9).
    pub fn with_momentum_cycle(self, base_momentum: f64, max_momentum: f64) -> Result<Self> {
        check_momenta("CyclicLR", base_momentum, max_momentum)?;
        Ok(CyclicLr { cycle_momentum: Some((base_momentum, max_momentum)), ..self })
    }

    /// torch's `scale_factor` and the mode's scale at step `k`, in torch's arithmetic order.
    fn position(&self, k: u64) -> (f64, f64) {
        let total = (self.step_size_up + self.step_size_down) as f64;
        let ratio = self.step_size_up as f64 / total;
        let cycle = (1.0 + k as f64 / total).floor();
        let x = 1.0 + k as f64 / total - cycle;
        let scale_factor = if x <= ratio { x / ratio } else { (x - 1.0) / (ratio - 1.0) };
        let scale = match self.mode {
            CyclicMode::Triangular => 1.0,
            CyclicMode::Triangular2 => 1.0 / 2f64.powf(cycle - 1.0),
            CyclicMode::ExpRange { gamma } => gamma.powf(k as f64),
        };
        (scale_factor, scale)
    }
}
schedule!(
    CyclicLr,
    |s, _base, k| {
        let (scale_factor, scale) = s.position(k);
        s.base_lr + (s.max_lr - s.base_lr) * scale_factor * scale
    },
    momentum | s,
    k | {
        let (base, max) = s.cycle_momentum?;
        let (scale_factor, scale) = s.position(k);
        Some(max - (max - base) * scale_factor * scale)
    }
);

/// torch `ChainedScheduler(schedulers)`: every schedule applied in turn, each scaling what
/// the one before gave — `s_n(… s_2(s_1(base, k), k) …, k)`. For schedules that scale the
/// learning rate (StepLR, MultiStepLR, ExponentialLR, ConstantLR, LinearLR, PolynomialLR,
/// MultiplicativeLR) this is torch's product of factors; a schedule with a floor or its own
/// values (CosineAnnealingLR's `eta_min`, OneCycleLR, CyclicLR) composes as written here,
/// which torch's recursive updates only approximate.
#[derive(Clone, Debug)]
pub struct ChainedLr {
    schedules: Vec<Box<dyn Schedule>>,
}

impl ChainedLr {
    /// At least one schedule (torch's message otherwise).
    pub fn new(schedules: Vec<Box<dyn Schedule>>) -> Result<Self> {
        if schedules.is_empty() {
            return Err(invalid(
                "ChainedScheduler expects at least one scheduler to be chained, but got no scheduler.".into(),
            ));
        }
        Ok(ChainedLr { schedules })
    }
}

impl Schedule for ChainedLr {
    fn lr(&self, base: f64, k: u64) -> f64 {
        self.schedules.iter().fold(base, |lr, s| s.lr(lr, k))
    }
    /// The last schedule's that cycles it (each of torch's chained schedulers sets it in turn).
    fn momentum(&self, k: u64) -> Option<f64> {
        self.schedules.iter().rev().find_map(|s| s.momentum(k))
    }
    fn clone_box(&self) -> Box<dyn Schedule> {
        Box::new(self.clone())
    }
    fn config(&self) -> serde_json::Value {
        let schedules: Vec<_> = self.schedules.iter().map(|s| s.config()).collect();
        serde_json::json!({ "ChainedLr": { "schedules": schedules } })
    }
}

/// torch `SequentialLR(schedulers, milestones)`: schedule `i` runs from milestone `i - 1`
/// on, restarted at its own step 0 (warmup then cosine, say).
#[derive(Clone, Debug)]
pub struct SequentialLr {
    schedules: Vec<Box<dyn Schedule>>,
    milestones: Vec<u64>,
}

impl SequentialLr {
    /// `milestones` has one entry fewer than `schedules`, increasing.
    pub fn new(schedules: Vec<Box<dyn Schedule>>, milestones: Vec<u64>) -> Result<Self> {
        if schedules.is_empty() || milestones.len() + 1 != schedules.len() {
            return Err(invalid(format!(
                "Sequential Schedulers expects number of schedulers provided to be one more than the number of \
                 milestone points, but got number of schedulers {} and the number of milestones to be equal to {}",
                schedules.len(),
                milestones.len()
            )));
        }
        if let Some(w) = milestones.windows(2).find(|w| w[0] >= w[1]) {
            return Err(invalid(format!(
                "SequentialLR milestones must increase strictly, got {} then {} in {milestones:?}",
                w[0], w[1]
            )));
        }
        Ok(SequentialLr { schedules, milestones })
    }
}

impl Schedule for SequentialLr {
    fn lr(&self, base: f64, k: u64) -> f64 {
        let i = self.milestones.iter().filter(|&&m| m <= k).count();
        let start = if i == 0 { 0 } else { self.milestones[i - 1] };
        self.schedules[i].lr(base, k - start)
    }
    fn momentum(&self, k: u64) -> Option<f64> {
        let i = self.milestones.iter().filter(|&&m| m <= k).count();
        let start = if i == 0 { 0 } else { self.milestones[i - 1] };
        self.schedules[i].momentum(k - start)
    }
    fn clone_box(&self) -> Box<dyn Schedule> {
        Box::new(self.clone())
    }
    fn config(&self) -> serde_json::Value {
        let schedules: Vec<_> = self.schedules.iter().map(|s| s.config()).collect();
        serde_json::json!({ "SequentialLr": { "schedules": schedules, "milestones": self.milestones } })
    }
}
