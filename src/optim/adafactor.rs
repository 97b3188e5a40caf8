//! Adafactor, as torch.optim.Adafactor: the config and the CPU definition of its step.
//!
//! Unlike the element-wise optimizers, a step needs reductions (row and column sums of g²,
//! the norms of p and of the update), so Adafactor has its own drivers:
//! [`CpuAdafactor`] here and [`GpuAdafactor`](crate::GpuAdafactor) on the GPU.

use ndarray::Array1;
use rayon::prelude::*;

use super::{check, lerp, py, setters};
use crate::checkpoint::{GroupSnapshot, Snapshot};
use crate::cpu::Threads;
use crate::error::{Error, Result};
use crate::tensor::HostData;

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
    /// From a shape; rank ≥ 2 is factored over the last two dimensions, as torch does.
    pub fn of(shape: &[usize]) -> Result<Self> {
        let numel: usize = shape.iter().product();
        if numel == 0 {
            return Err(Error::Empty { what: "Adafactor shape" });
        }
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

/// The norm torch would return for a sum of squares: computed in f64 and rounded once to
/// f32 (torch accumulates in f32 in an implementation-defined order; this is the exact
/// value it approximates).
fn norm_f32(sum_of_squares: f64) -> f32 {
    sum_of_squares.sqrt() as f32
}

/// Sum of `f(x)` over `xs` in f64, by chunks of [`CHUNK`] summed in order, so the
/// sequential and parallel paths give the same bits.
fn chunked_sum(xs: &[f32], threads: Threads, f: impl Fn(usize, f32) -> f64 + Sync) -> f64 {
    let chunk = |(c, part): (usize, &[f32])| part.iter().enumerate().map(|(k, &x)| f(c * CHUNK + k, x)).sum::<f64>();
    let parts: Vec<f64> = match threads {
        Threads::Sequential => xs.chunks(CHUNK).enumerate().map(chunk).collect(),
        Threads::Parallel => xs.par_chunks(CHUNK).enumerate().map(chunk).collect(),
    };
    parts.iter().sum()
}

/// Adafactor on the CPU: the reference ([`Threads::Sequential`]) and the baseline
/// ([`Threads::Parallel`]), bit-identical to each other.
#[derive(Clone, Debug)]
pub struct CpuAdafactor {
    config: Adafactor,
    shape: Factoring,
    params: Array1<f32>,
    row_var: Array1<f32>,
    col_var: Array1<f32>,
    variance: Array1<f32>,
    step: u64,
    threads: Threads,
}

impl CpuAdafactor {
    /// Copies `params` of the given `shape` and creates zeroed state.
    pub fn new(config: Adafactor, params: &(impl HostData + ?Sized), shape: &[usize]) -> Result<Self> {
        config.validate()?;
        let shape = Factoring::of(shape)?;
        let p = params.as_f32s()?;
        if p.len() != shape.numel() {
            return Err(Error::LengthMismatch { what: "params (shape)", expected: shape.numel(), actual: p.len() });
        }
        let (rows, cols, variance) = if shape.factored {
            (shape.matrices * shape.rows, shape.matrices * shape.cols, 0)
        } else {
            (0, 0, p.len())
        };
        Ok(CpuAdafactor {
            config,
            shape,
            params: Array1::from(p.to_vec()),
            row_var: Array1::zeros(rows),
            col_var: Array1::zeros(cols),
            variance: Array1::zeros(variance),
            step: 0,
            threads: Threads::Sequential,
        })
    }

    /// The same optimizer running with `threads`.
    pub fn with_threads(self, threads: Threads) -> Self {
        CpuAdafactor { threads, ..self }
    }

    /// Takes one step with `grads`.
    pub fn step(&mut self, grads: &(impl HostData + ?Sized)) -> Result<()> {
        let g = grads.as_f32s()?;
        let numel = self.shape.numel();
        if g.len() != numel {
            return Err(Error::LengthMismatch { what: "grads", expected: numel, actual: g.len() });
        }
        let c = &self.config;
        let threads = self.threads;
        let step = self.step + 1;
        let (w, rho) = c.schedule(step);
        let (w, eps1) = (w as f32, c.eps1());
        let sqrt_numel = (numel as f64).powf(0.5);
        let sign = if c.maximize { -1.0f32 } else { 1.0 };
        let p = self.params.as_slice_mut().ok_or(Error::Empty { what: "params" })?;

        let p_norm = norm_f32(chunked_sum(p, threads, |_, x| f64::from(x) * f64::from(x)));
        let alpha = c.eps.1.max(f64::from(p_norm) / sqrt_numel) * rho;
        if c.weight_decay != 0.0 {
            let decay = (1.0 - c.lr * c.weight_decay) as f32;
            p.iter_mut().for_each(|x| *x *= decay);
        }

        let Factoring { matrices, rows: m, cols: n, factored } = self.shape;
        let row_means: Vec<f32> = if factored {
            let row_var = self.row_var.as_slice_mut().ok_or(Error::Empty { what: "row_var" })?;
            let col_var = self.col_var.as_slice_mut().ok_or(Error::Empty { what: "col_var" })?;
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
            let variance = self.variance.as_slice_mut().ok_or(Error::Empty { what: "variance" })?;
            for (v, &x) in variance.iter_mut().zip(g) {
                let d = sign * x;
                *v = lerp(*v, d * d, w);
            }
            Vec::new()
        };

        let eps1_sq = (eps1 * eps1) as f32;
        let (row_var, col_var, variance) = (&self.row_var, &self.col_var, &self.variance);
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
        let u_norm = norm_f32(chunked_sum(g, threads, |e, x| f64::from(update(e, x)).powi(2)));
        let denom = 1.0f64.max(f64::from(u_norm) / (sqrt_numel * c.d));
        let coef = (-alpha / denom) as f32;
        let apply = |(c0, (p, g)): (usize, (&mut [f32], &[f32]))| {
            for (k, (p, &x)) in p.iter_mut().zip(g).enumerate() {
                *p = update(c0 * CHUNK + k, x).mul_add(coef, *p);
            }
        };
        match threads {
            Threads::Sequential => p.chunks_mut(CHUNK).zip(g.chunks(CHUNK)).enumerate().for_each(apply),
            Threads::Parallel => p.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).enumerate().for_each(apply),
        }
        self.step = step;
        Ok(())
    }

    /// Steps taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }
    /// The parameters.
    pub fn params(&self) -> &Array1<f32> {
        &self.params
    }
    /// State by torch's name: `row_var`, `col_var` (factored) or `variance`.
    pub fn state_tensor(&self, name: &str) -> Option<&Array1<f32>> {
        match (name, self.shape.factored) {
            ("row_var", true) => Some(&self.row_var),
            ("col_var", true) => Some(&self.col_var),
            ("variance", false) => Some(&self.variance),
            _ => None,
        }
    }
    /// How the tensor is factored.
    pub fn factoring(&self) -> Factoring {
        self.shape
    }

    /// The state tensors this tensor keeps, by torch name, in checkpoint order.
    fn state(&self) -> Vec<(&'static str, &Array1<f32>)> {
        if self.shape.factored {
            vec![("col_var", &self.col_var), ("row_var", &self.row_var)]
        } else {
            vec![("variance", &self.variance)]
        }
    }

    /// Saves the state to a safetensors checkpoint, atomically (see
    /// [`GpuAdafactor::save`](crate::GpuAdafactor::save); the two read each other's files).
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let state = self
            .state()
            .into_iter()
            .map(|(n, t)| (n.to_string(), crate::format::HostTensor::from_f32s(&t.to_vec())))
            .collect();
        let group = GroupSnapshot::of_adafactor(&self.config, self.step, self.shape.numel(), state);
        Snapshot { groups: vec![group], scaler: None }.save(path.as_ref())
    }

    /// Loads a checkpoint of the same configuration and shape; a bad file changes nothing.
    pub fn load(&mut self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let path = path.as_ref();
        let snapshot = Snapshot::load(path)?;
        let group = snapshot.single(path)?;
        // Checked against the factoring: the saved tensors are ours, in checkpoint order.
        let state = group.restore_adafactor(path, &self.config, self.shape)?;
        let state = state.iter().map(|(_, d)| d.to_f32s()).collect::<Result<Vec<_>>>()?;
        let ours =
            if self.shape.factored { vec![&mut self.col_var, &mut self.row_var] } else { vec![&mut self.variance] };
        for (t, data) in ours.into_iter().zip(state) {
            *t = Array1::from(data);
        }
        self.step = group.step;
        Ok(())
    }
}
