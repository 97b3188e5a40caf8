//! torch's `ReduceLROnPlateau`: a learning rate cut when a metric the host measures stops
//! improving. Unlike the [`Schedule`](super::Schedule)s it is not a function of the step:
//! it is fed the metric (a validation loss, say) and keeps a count of bad epochs, so it lives
//! on the host beside the optimizer and sets its learning rate between steps.

use crate::error::{Error, Result};

/// Whether a lower or a higher metric is better (torch's `mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PlateauMode {
    /// A loss: lower is better.
    Min,
    /// An accuracy: higher is better.
    Max,
}

/// How an improvement is measured against the best metric so far (torch's `threshold_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ThresholdMode {
    /// Better than `best * (1 ∓ threshold)`.
    Rel,
    /// Better than `best ∓ threshold`.
    Abs,
}

/// torch `ReduceLROnPlateau(optimizer, mode='min', factor=0.1, patience=10, threshold=1e-4,
/// threshold_mode='rel', cooldown=0, min_lr=0, eps=1e-8)`, with torch's arithmetic and order:
/// after more than `patience` epochs without improvement the learning rate becomes
/// `max(lr * factor, min_lr)` (unless that changes it by no more than `eps`), then `cooldown`
/// epochs pass in which bad epochs are not counted.
///
/// ```
/// # use wgpu_optim::schedule::ReduceLrOnPlateau;
/// let mut plateau = ReduceLrOnPlateau::new().with_patience(2);
/// let mut lr = 0.1;
/// for loss in [1.0, 0.9, 0.95, 0.95, 0.95] {
///     lr = plateau.step(loss, lr); // then `optimizer.set_lr(lr)?`
/// }
/// assert!((lr - 0.01).abs() < 1e-15);
/// ```
///
/// With parameter groups, [`step_metric`](Self::step_metric) says whether to cut, and
/// [`reduced`](Self::reduced) gives each group's new learning rate (torch cuts every group).
/// Serde keeps its counters with the rest of a training run's host state.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReduceLrOnPlateau {
    mode: PlateauMode,
    factor: f64,
    patience: u64,
    threshold: f64,
    threshold_mode: ThresholdMode,
    cooldown: u64,
    min_lr: f64,
    eps: f64,
    /// The best metric so far (the worst possible before the first).
    best: f64,
    num_bad_epochs: u64,
    cooldown_counter: u64,
    /// Metrics fed so far (torch's `last_epoch`).
    epochs: u64,
}

impl Default for ReduceLrOnPlateau {
    fn default() -> Self {
        ReduceLrOnPlateau {
            mode: PlateauMode::Min,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            threshold_mode: ThresholdMode::Rel,
            cooldown: 0,
            min_lr: 0.0,
            eps: 1e-8,
            best: f64::INFINITY,
            num_bad_epochs: 0,
            cooldown_counter: 0,
            epochs: 0,
        }
    }
}

fn invalid(message: String) -> Error {
    Error::InvalidHyperParameter { optimizer: "ReduceLROnPlateau", message }
}

impl ReduceLrOnPlateau {
    /// torch's defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets `mode` (and the best metric so far to its worst, as torch's `_reset`).
    pub fn with_mode(self, mode: PlateauMode) -> Self {
        let best = if mode == PlateauMode::Min { f64::INFINITY } else { f64::NEG_INFINITY };
        ReduceLrOnPlateau { mode, best, ..self }
    }
    /// Sets `factor`: torch's "Factor should be < 1.0."; and ≥ 0, finite (a negative factor
    /// would make a learning rate negative).
    pub fn with_factor(self, factor: f64) -> Result<Self> {
        if factor >= 1.0 {
            return Err(invalid("Factor should be < 1.0.".into()));
        }
        if factor.is_nan() || factor < 0.0 {
            return Err(invalid(format!("factor must be >= 0, got {factor}")));
        }
        Ok(ReduceLrOnPlateau { factor, ..self })
    }
    /// Sets `patience`: bad epochs tolerated before a cut.
    pub fn with_patience(self, patience: u64) -> Self {
        ReduceLrOnPlateau { patience, ..self }
    }
    /// Sets `threshold` and `threshold_mode`; the threshold finite and ≥ 0.
    pub fn with_threshold(self, threshold: f64, threshold_mode: ThresholdMode) -> Result<Self> {
        if !(threshold.is_finite() && threshold >= 0.0) {
            return Err(invalid(format!("threshold must be >= 0 and finite, got {threshold}")));
        }
        Ok(ReduceLrOnPlateau { threshold, threshold_mode, ..self })
    }
    /// Sets `cooldown`: epochs after a cut in which bad epochs are not counted.
    pub fn with_cooldown(self, cooldown: u64) -> Self {
        ReduceLrOnPlateau { cooldown, ..self }
    }
    /// Sets `min_lr`, finite and ≥ 0.
    pub fn with_min_lr(self, min_lr: f64) -> Result<Self> {
        if !(min_lr.is_finite() && min_lr >= 0.0) {
            return Err(invalid(format!("min_lr must be >= 0 and finite, got {min_lr}")));
        }
        Ok(ReduceLrOnPlateau { min_lr, ..self })
    }
    /// Sets `eps`: a cut smaller than this is not made. Finite and ≥ 0.
    pub fn with_eps(self, eps: f64) -> Result<Self> {
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(invalid(format!("eps must be >= 0 and finite, got {eps}")));
        }
        Ok(ReduceLrOnPlateau { eps, ..self })
    }

    /// Feeds one epoch's metric; returns whether the learning rate is to be cut now (torch's
    /// `step` up to `_reduce_lr`). A NaN metric is never an improvement, as in torch.
    pub fn step_metric(&mut self, metric: f64) -> bool {
        self.epochs += 1;
        if self.is_better(metric) {
            self.best = metric;
            self.num_bad_epochs = 0;
        } else {
            self.num_bad_epochs += 1;
        }
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.num_bad_epochs = 0;
        }
        if self.num_bad_epochs > self.patience {
            self.cooldown_counter = self.cooldown;
            self.num_bad_epochs = 0;
            return true;
        }
        false
    }

    /// The learning rate after a cut from `lr`: `max(lr * factor, min_lr)`, or `lr` where
    /// that changes it by no more than `eps` (torch's `_reduce_lr`).
    pub fn reduced(&self, lr: f64) -> f64 {
        let new = (lr * self.factor).max(self.min_lr);
        if lr - new > self.eps { new } else { lr }
    }

    /// Feeds one epoch's metric and returns the learning rate to use from now on, given the
    /// current one.
    pub fn step(&mut self, metric: f64, lr: f64) -> f64 {
        if self.step_metric(metric) { self.reduced(lr) } else { lr }
    }

    /// The best metric so far.
    pub fn best(&self) -> f64 {
        self.best
    }

    /// Metrics fed so far.
    pub fn epochs(&self) -> u64 {
        self.epochs
    }

    fn is_better(&self, a: f64) -> bool {
        match (self.mode, self.threshold_mode) {
            (PlateauMode::Min, ThresholdMode::Rel) => a < self.best * (1.0 - self.threshold),
            (PlateauMode::Min, ThresholdMode::Abs) => a < self.best - self.threshold,
            (PlateauMode::Max, ThresholdMode::Rel) => a > self.best * (self.threshold + 1.0),
            (PlateauMode::Max, ThresholdMode::Abs) => a > self.best + self.threshold,
        }
    }
}
