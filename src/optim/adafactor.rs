//! Adafactor, as torch.optim.Adafactor: the config and the CPU definition of its step, a
//! shaped step ([`crate::step`]): row and column sums of g² into a factored second moment,
//! the norms of p and of the update, then the element-wise update.

use rayon::prelude::*;

use super::{
    Kernel, Optimizer, ScalarBlock, StateSlices, StateSlot, check, common_methods, flag, lerp, pack, py, setters,
};
use crate::error::{Error, Result};
use crate::step::{Scope, Stage};

/// Adafactor, torch.optim.Adafactor (single-tensor path).
///
/// For a tensor of shape `[..., M, N]` the second moment is factored over the last two
/// dimensions into `row_var` (`[..., M]`) and `col_var` (`[..., N]`) — O(M + N) memory per
/// matrix; vectors keep an unfactored `variance`.
/// ```text
/// t = t + 1;  g = maximize ? -grad : grad
/// w = t^beta2_decay;  rho = min(lr, 1/sqrt(t));  alpha = max(eps2, RMS(p)) * rho
/// p = p * (1 - lr * weight_decay)
/// matrix: row_var = lerp(row_var, ‖g_row‖² / N, w);  col_var = lerp(col_var, ‖g_col‖² / M, w)
///         V = row_var ⊗ col_var / max(mean(row_var), eps1)
/// vector: variance = lerp(variance, g², w);  V = variance
/// U = g / sqrt(max(V, eps1²));  p = p - alpha / max(1, RMS(U) / d) * U
/// ```
/// `eps1` defaults to f32's machine epsilon (2^-23), `eps2` to 1e-3. Shazeer & Stern (2018)
/// put eps1 = 1e-30 inside the sums and cap rho at 1e-2; torch uses clamps and `lr`. The
/// factored form applies to every tensor of rank ≥ 2 (optax: only when the second-largest
/// dimension is ≥ 128).
/// The tensor's shape is given per parameter ([`CpuOptimizer::with_shape`](crate::CpuOptimizer::with_shape));
/// a parameter without one is a vector.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Adafactor {
    /// Learning rate, the cap of the relative step size (default 1e-2).
    pub lr: f64,
    /// Exponent of the second-moment weight `t^beta2_decay` (default -0.8).
    pub beta2_decay: f64,
    /// (eps1, eps2): floor of the second moment (default f32 epsilon) and of RMS(p) (1e-3).
    pub eps: (Option<f64>, f64),
    /// Clipping threshold of RMS(U) (default 1.0).
    pub d: f64,
    /// Decoupled weight decay (default 0).
    pub weight_decay: f64,
    /// Maximize the objective (default false).
    pub maximize: bool,
}

impl Default for Adafactor {
    fn default() -> Self {
        Adafactor { lr: 1e-2, beta2_decay: -0.8, eps: (None, 1e-3), d: 1.0, weight_decay: 0.0, maximize: false }
    }
}

impl Adafactor {
    /// With learning rate `lr` and torch's other defaults.
    pub fn new(lr: f64) -> Self {
        Adafactor { lr, ..Self::default() }
    }
    /// Sets `eps` = (eps1, eps2).
    pub fn with_eps(self, eps1: Option<f64>, eps2: f64) -> Self {
        Adafactor { eps: (eps1, eps2), ..self }
    }

    /// torch's checks and messages.
    pub fn validate(&self) -> Result<()> {
        let n = "Adafactor";
        check(n, self.lr >= 0.0, || format!("Learning rate should be >= 0 but is: {}", py(self.lr)))?;
        check(n, self.beta2_decay <= 0.0, || format!("beta2_decay should be <= 0 but is: {}", py(self.beta2_decay)))?;
        if let Some(e1) = self.eps.0 {
            check(n, e1 >= 0.0, || format!("epsilon1 should be >= 0 but is: {}", py(e1)))?;
        }
        check(n, self.eps.1 >= 0.0, || format!("epsilon2 should be >= 0 but is: {}", py(self.eps.1)))?;
        check(n, self.d >= 1.0, || format!("Clipping threshold d should be >= 1 but is: {}", py(self.d)))?;
        check(n, self.weight_decay >= 0.0, || format!("weight_decay should be >= 0 but is: {}", py(self.weight_decay)))
    }

    /// eps1 as torch resolves it: `torch.finfo(float32).eps` when not given.
    pub(crate) fn eps1(&self) -> f64 {
        self.eps.0.unwrap_or(f64::from(f32::EPSILON))
    }

    /// Host scalars of step `t`, in f64 as torch computes them.
    pub(crate) fn schedule(&self, step: u64) -> (f64, f64) {
        let t = step as f64;
        (t.powf(self.beta2_decay), self.lr.min(1.0 / t.powf(0.5)))
    }
}
setters!(Adafactor {
    with_beta2_decay => beta2_decay: f64,
    with_d => d: f64,
    with_weight_decay => weight_decay: f64,
    with_maximize => maximize: bool,
});

/// A tensor's shape as Adafactor sees it: `matrices` × `rows` × `cols` when factored (the
/// leading dimensions multiplied together), or one unfactored vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Factoring {
    /// Product of the leading dimensions (1 for a matrix).
    pub matrices: usize,
    /// M, the second-to-last dimension.
    pub rows: usize,
    /// N, the last dimension.
    pub cols: usize,
    /// Rank ≥ 2.
    pub factored: bool,
}

impl Factoring {
    /// From a shape; rank ≥ 2 is factored over the last two dimensions, as torch does. The
    /// element count is checked ([`super::numel`]).
    pub fn of(shape: &[usize]) -> Result<Self> {
        let numel = super::numel(shape)?;
        Ok(match shape {
            [lead @ .., m, n] => Factoring { matrices: lead.iter().product(), rows: *m, cols: *n, factored: true },
            _ => Factoring { matrices: 1, rows: 1, cols: numel, factored: false },
        })
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.matrices * self.rows * self.cols
    }
}

/// Elements per chunk of the global sums, on both sides (the GPU's `CHUNK`).
pub(crate) const CHUNK: usize = 1024;

/// State slots: the unfactored second moment of a vector, the factored one of a matrix.
const VARIANCE: usize = 0;
const ROW_VAR: usize = 1;
const COL_VAR: usize = 2;

static KERNEL: Kernel = Kernel {
    family: "adafactor",
    source: include_str!("../../shaders/adafactor.wgsl"),
    state: &[
        StateSlot { role: "variance", torch_name: "variance", signed: false },
        StateSlot { role: "row_var", torch_name: "row_var", signed: false },
        StateSlot { role: "col_var", torch_name: "col_var", signed: false },
    ],
    scalar_size: size_of::<Scalars>(),
    // The element-wise part (decay mul 1, V: mul 1 + div 3, max, sqrt 5, 1/x 3, mul 1, fma 2
    // = 16) plus the scalars alpha and coef, whose sums the GPU forms as f32 trees (≤ log2(n)
    // + 1 ε relative for the sizes tested, ≤ 20) and the CPU in f64; a sum's relative error
    // reaches the update at half weight through the square root: 16 + 10 + 10 = 36.
    step_error_budget: 36.0,
    // Row and column sums of g², ‖p‖², then ‖U‖² (with the unfactored variance), then the
    // update.
    stages: &[
        Stage::Reduce(Scope::Rows),
        Stage::Reduce(Scope::Columns),
        Stage::Reduce(Scope::Tensor),
        Stage::Reduce(Scope::Tensor),
        Stage::Elementwise,
    ],
};

/// The per-step scalars, as `struct Scalars` in shaders/adafactor.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Scalars {
    w: f32,
    rho: f32,
    eps1: f32,
    eps1_sq: f32,
    eps2: f32,
    decay: f32,
    d: f32,
}

impl Optimizer for Adafactor {
    common_methods!(KERNEL);
    fn name(&self) -> &'static str {
        "Adafactor"
    }
    fn reference(&self) -> &'static str {
        "torch.optim.Adafactor"
    }
    fn validate(&self) -> Result<()> {
        Adafactor::validate(self)
    }
    fn state_len(&self, slot: usize, shape: &[usize]) -> usize {
        match Factoring::of(shape) {
            Ok(f) if f.factored => match slot {
                ROW_VAR => f.matrices * f.rows,
                COL_VAR => f.matrices * f.cols,
                _ => 0,
            },
            Ok(f) if slot == VARIANCE => f.numel(),
            _ => 0,
        }
    }
    fn constants(&self) -> Vec<(&'static str, f64)> {
        vec![("MAXIMIZE", flag(self.maximize)), ("WEIGHT_DECAY", flag(self.weight_decay != 0.0))]
    }
    /// f64 on the host as torch computes them, one rounding to f32 each.
    fn scalars(&self, step: u64) -> ScalarBlock {
        let (w, rho) = self.schedule(step);
        let eps1 = self.eps1();
        pack(&Scalars {
            w: w as f32,
            rho: rho as f32,
            eps1: eps1 as f32,
            eps1_sq: (eps1 * eps1) as f32,
            eps2: self.eps.1 as f32,
            decay: (1.0 - self.lr * self.weight_decay) as f32,
            d: self.d as f32,
        })
    }
    /// The elements as one vector (the CPU runs [`shaped_cpu`](Optimizer::shaped_cpu) with
    /// each tensor's shape; this is its vector case).
    fn update_cpu(&self, step: u64, p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>) {
        let n = p.len();
        // A vector of the run's length with a variance of that length cannot fail.
        self.shaped_cpu(step, &[n], p, g, state, false).ok();
    }
    fn shaped_cpu(
        &self,
        step: u64,
        shape: &[usize],
        p: &mut [f32],
        g: &[f32],
        state: StateSlices<'_, '_>,
        parallel: bool,
    ) -> Result<()> {
        let factoring = Factoring::of(shape)?;
        let numel = factoring.numel();
        for (slot, s) in state.iter().enumerate() {
            let want = self.state_len(slot, shape);
            if s.len() != want {
                return Err(Error::LengthMismatch { what: "Adafactor state", expected: want, actual: s.len() });
            }
        }
        if p.len() != numel || g.len() != numel {
            return Err(Error::LengthMismatch { what: "params (shape)", expected: numel, actual: p.len() });
        }
        let [variance, row_var, col_var] = state else {
            return Err(Error::LengthMismatch { what: "Adafactor state slots", expected: 3, actual: state.len() });
        };
        step_tensor(self, step, factoring, p, g, [variance, row_var, col_var], parallel);
        Ok(())
    }
}

/// The norm torch would return for a sum of squares: computed in f64 and rounded once to
/// f32 (torch accumulates in f32 in an implementation-defined order; this is the exact
/// value it approximates).
fn norm_f32(sum_of_squares: f64) -> f32 {
    sum_of_squares.sqrt() as f32
}

/// Sum of `f(x)` over `xs` in f64, by chunks of [`CHUNK`] summed in order, so the
/// sequential and parallel paths give the same bits.
fn chunked_sum(xs: &[f32], parallel: bool, f: impl Fn(usize, f32) -> f64 + Sync) -> f64 {
    let chunk = |(c, part): (usize, &[f32])| part.iter().enumerate().map(|(k, &x)| f(c * CHUNK + k, x)).sum::<f64>();
    let parts: Vec<f64> = if parallel {
        xs.par_chunks(CHUNK).enumerate().map(chunk).collect()
    } else {
        xs.chunks(CHUNK).enumerate().map(chunk).collect()
    };
    parts.iter().sum()
}

/// One step of one tensor, its lengths checked: ‖p‖, the moments, ‖U‖, the update.
fn step_tensor(
    c: &Adafactor,
    step: u64,
    shape: Factoring,
    p: &mut [f32],
    g: &[f32],
    [variance, row_var, col_var]: [&mut &mut [f32]; 3],
    parallel: bool,
) {
    let numel = shape.numel();
    let (w, rho) = c.schedule(step);
    let (w, eps1) = (w as f32, c.eps1());
    let sqrt_numel = (numel as f64).powf(0.5);
    let sign = if c.maximize { -1.0f32 } else { 1.0 };

    let p_norm = norm_f32(chunked_sum(p, parallel, |_, x| f64::from(x) * f64::from(x)));
    let alpha = c.eps.1.max(f64::from(p_norm) / sqrt_numel) * rho;
    if c.weight_decay != 0.0 {
        let decay = (1.0 - c.lr * c.weight_decay) as f32;
        p.iter_mut().for_each(|x| *x *= decay);
    }

    let Factoring { matrices, rows: m, cols: n, factored } = shape;
    let row_means: Vec<f32> = if factored {
        // vector_norm(g, dim).square_().div_(size): norm in f32, squared, divided.
        let mean_sq = |sum: f64, count: usize| {
            let norm = norm_f32(sum);
            norm * norm / count as f32
        };
        for (r, v) in row_var.iter_mut().enumerate() {
            let sum: f64 = g[r * n..(r + 1) * n].iter().map(|&x| f64::from(x) * f64::from(x)).sum();
            *v = lerp(*v, mean_sq(sum, n), w);
        }
        for b in 0..matrices {
            for j in 0..n {
                let sum: f64 = (0..m).map(|i| f64::from(g[(b * m + i) * n + j]).powi(2)).sum();
                let v = &mut col_var[b * n + j];
                *v = lerp(*v, mean_sq(sum, m), w);
            }
        }
        (0..matrices)
            .map(|b| {
                let sum: f64 = row_var[b * m..(b + 1) * m].iter().map(|&x| f64::from(x)).sum();
                ((sum / m as f64) as f32).max(eps1 as f32)
            })
            .collect()
    } else {
        for (v, &x) in variance.iter_mut().zip(g) {
            let d = sign * x;
            *v = lerp(*v, d * d, w);
        }
        Vec::new()
    };

    let eps1_sq = (eps1 * eps1) as f32;
    let (row_var, col_var, variance) = (&**row_var, &**col_var, &**variance);
    // U = rsqrt(max(V, eps1²)) * g for element e.
    let update = |e: usize, x: f32| {
        let v = if factored {
            let (b, i, j) = (e / (m * n), (e / n) % m, e % n);
            (row_var[b * m + i] * col_var[b * n + j]) / row_means[b]
        } else {
            variance[e]
        };
        (1.0 / v.max(eps1_sq).sqrt()) * (sign * x)
    };
    let u_norm = norm_f32(chunked_sum(g, parallel, |e, x| f64::from(update(e, x)).powi(2)));
    let denom = 1.0f64.max(f64::from(u_norm) / (sqrt_numel * c.d));
    let coef = (-alpha / denom) as f32;
    let apply = |(c0, (p, g)): (usize, (&mut [f32], &[f32]))| {
        for (k, (p, &x)) in p.iter_mut().zip(g).enumerate() {
            *p = update(c0 * CHUNK + k, x).mul_add(coef, *p);
        }
    };
    if parallel {
        p.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).enumerate().for_each(apply);
    } else {
        p.chunks_mut(CHUNK).zip(g.chunks(CHUNK)).enumerate().for_each(apply);
    }
}
