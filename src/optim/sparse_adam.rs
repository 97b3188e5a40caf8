//! Rows-only steps over a table a step's sparse gradient touches (an embedding's looked-up
//! rows): SparseAdam, as torch.optim.SparseAdam (lazy Adam: the other rows' moments left as
//! they are), and plain SGD. The configs and the per-element CPU rule; the steps are
//! `crate::sparse`.

use super::{check, check_betas, py};
use crate::error::{Error, Result};

/// SparseAdam, torch.optim.SparseAdam (`torch/optim/_functional.py` `sparse_adam`).
///
/// A step's gradient is rows of the table: row indices (duplicates summed, as torch's
/// `coalesce`) and their values. Per element of each touched row, in torch's order:
/// ```text
/// g = maximize ? -g : g
/// m' = m + (g - m)(1 - β1);  v' = v + (g² - v)(1 - β2)
/// p = p + (-lr √(1 - β2^t) / (1 - β1^t)) · (m' / (√v' + eps))
/// ```
/// `t` counts steps, touched or not (torch's `state["step"]`); a step with no rows changes
/// only the count. State: `exp_avg`, `exp_avg_sq`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SparseAdam {
    /// Learning rate (default 1e-3; > 0).
    pub lr: f64,
    /// Coefficients of the moments (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to the denominator (default 1e-8; > 0).
    pub eps: f64,
    /// Maximize the objective (default false).
    pub maximize: bool,
}

impl Default for SparseAdam {
    fn default() -> Self {
        SparseAdam { lr: 1e-3, betas: (0.9, 0.999), eps: 1e-8, maximize: false }
    }
}

impl SparseAdam {
    /// With learning rate `lr` and torch's other defaults.
    pub fn new(lr: f64) -> Self {
        SparseAdam { lr, ..Self::default() }
    }
    /// Sets `betas`.
    pub fn with_betas(self, beta1: f64, beta2: f64) -> Self {
        SparseAdam { betas: (beta1, beta2), ..self }
    }
    /// Sets `eps`.
    pub fn with_eps(self, eps: f64) -> Self {
        SparseAdam { eps, ..self }
    }
    /// Sets `maximize`.
    pub fn with_maximize(self, maximize: bool) -> Self {
        SparseAdam { maximize, ..self }
    }

    /// torch's checks and messages (`lr` and `eps` strictly positive).
    pub fn validate(&self) -> Result<()> {
        let name = "SparseAdam";
        check(name, self.lr > 0.0 && self.lr.is_finite(), || format!("Invalid learning rate: {}", py(self.lr)))?;
        check(name, self.eps > 0.0 && self.eps.is_finite(), || format!("Invalid epsilon value: {}", py(self.eps)))?;
        check_betas(name, self.betas)
    }

    /// Step `t`'s scalars as f32, torch's Python floats rounded once: 1 - β1, 1 - β2, and
    /// `-step_size`.
    pub(crate) fn scalars(&self, t: u64) -> SparseScalars {
        let (b1, b2) = self.betas;
        let step_size = self.lr * (1.0 - b2.powf(t as f64)).sqrt() / (1.0 - b1.powf(t as f64));
        SparseScalars {
            one_minus_beta1: (1.0 - b1) as f32,
            one_minus_beta2: (1.0 - b2) as f32,
            neg_step_size: (-step_size) as f32,
            eps: self.eps as f32,
            maximize: u32::from(self.maximize),
            sgd: 0,
        }
    }
}

/// SGD over a table's touched rows: torch.optim.SGD (no momentum, no weight decay) on a
/// sparse gradient, `p[r] = p[r] + (-lr) · g` (one rounding) for each entry (r, g) in order —
/// torch adds an uncoalesced gradient entry by entry —
/// the other rows untouched — what dense SGD gives them on a zero gradient, without reading
/// them. (torch's momentum on a sparse gradient keeps a buffer for every row touched so far
/// and updates them all, as dense SGD does: use `Sgd` on the dense gradient for that.)
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SparseSgd {
    /// Learning rate (> 0; default 1e-3).
    pub lr: f64,
    /// Maximize the objective (default false).
    pub maximize: bool,
}

impl SparseSgd {
    /// With learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        SparseSgd { lr, maximize: false }
    }
    /// Sets `maximize`.
    pub fn with_maximize(self, maximize: bool) -> Self {
        SparseSgd { maximize, ..self }
    }
}

/// The rule a rows-only step applies to each touched element.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum RowRule {
    /// Lazy Adam with its moments (torch.optim.SparseAdam).
    Adam(SparseAdam),
    /// Plain SGD (torch.optim.SGD on a sparse gradient).
    Sgd(SparseSgd),
}

impl From<SparseAdam> for RowRule {
    fn from(a: SparseAdam) -> Self {
        RowRule::Adam(a)
    }
}

impl From<SparseSgd> for RowRule {
    fn from(s: SparseSgd) -> Self {
        RowRule::Sgd(s)
    }
}

impl RowRule {
    /// The rule's checks (torch's messages).
    pub fn validate(&self) -> Result<()> {
        match self {
            RowRule::Adam(a) => a.validate(),
            RowRule::Sgd(s) => {
                check("SparseSgd", s.lr > 0.0 && s.lr.is_finite(), || format!("Invalid learning rate: {}", py(s.lr)))
            }
        }
    }

    /// Whether the rule keeps Adam's moments.
    pub fn has_moments(&self) -> bool {
        matches!(self, RowRule::Adam(_))
    }

    pub(crate) fn scalars(&self, t: u64) -> SparseScalars {
        match self {
            RowRule::Adam(a) => a.scalars(t),
            RowRule::Sgd(s) => SparseScalars {
                one_minus_beta1: 0.0,
                one_minus_beta2: 0.0,
                neg_step_size: (-s.lr) as f32,
                eps: 0.0,
                maximize: u32::from(s.maximize),
                sgd: 1,
            },
        }
    }
}

/// A step's scalars (`struct Scalars` in shaders/sparse_adam.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct SparseScalars {
    pub one_minus_beta1: f32,
    pub one_minus_beta2: f32,
    pub neg_step_size: f32,
    pub eps: f32,
    pub maximize: u32,
    /// 1: plain SGD (no moments).
    pub sgd: u32,
}

/// One element's update, given its coalesced gradient.
#[inline(always)]
pub(crate) fn update(s: &SparseScalars, p: &mut f32, m: &mut f32, v: &mut f32, g: f32) {
    let g = if s.maximize == 1 { -g } else { g };
    let (old_m, old_v) = (*m, *v);
    let upd_m = (g - old_m) * s.one_minus_beta1;
    let upd_v = (g * g - old_v) * s.one_minus_beta2;
    *m = old_m + upd_m;
    *v = old_v + upd_v;
    let denom = v.sqrt() + s.eps;
    *p += s.neg_step_size * (*m / denom);
}

/// Checks a step's rows against a table of `rows` rows of `dim`: one index per row of
/// values, each index below `rows`. `Err` names the first that is not.
pub(crate) fn check_rows(indices: &[u32], values: &[f32], rows: usize, dim: usize) -> Result<()> {
    let expected = indices.len().checked_mul(dim).ok_or_else(|| Error::OverLimit("rows × dim".into()))?;
    if values.len() != expected {
        return Err(Error::LengthMismatch { what: "values (indices × dim)", expected, actual: values.len() });
    }
    if let Some((k, &r)) = indices.iter().enumerate().find(|&(_, &r)| r as usize >= rows) {
        return Err(Error::OverLimit(format!(
            "indices[{k}] = {r} is past the table's {rows} rows: a row index is below the table's rows"
        )));
    }
    Ok(())
}

/// torch's `coalesce`: the distinct rows in increasing order, each with its entries' values
/// summed in the order they were given.
pub(crate) fn coalesce(indices: &[u32], values: &[f32], dim: usize) -> Vec<(u32, Vec<f32>)> {
    let mut order: Vec<usize> = (0..indices.len()).collect();
    order.sort_by_key(|&k| indices[k]); // stable: equal rows keep their order
    let mut out: Vec<(u32, Vec<f32>)> = Vec::new();
    for k in order {
        let row = &values[k * dim..(k + 1) * dim];
        match out.last_mut() {
            Some((r, sum)) if *r == indices[k] => sum.iter_mut().zip(row).for_each(|(s, &x)| *s += x),
            _ => out.push((indices[k], row.to_vec())),
        }
    }
    out
}
