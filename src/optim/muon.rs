//! Muon, as torch.optim.Muon (PyTorch 2.9+, `torch/optim/_muon.py`): the config and the CPU
//! definition of its step, a shaped step ([`crate::step`]): momentum, then the Newton–Schulz
//! orthogonalisation of the (Nesterov) momentum as matrix products, then the update.

use ndarray::{Array2, ArrayView2, linalg::general_mat_mul};

use super::{Kernel, Optimizer, ScalarBlock, StateSlices, StateSlot, check, common_methods, lerp, pack, py, setters};
use crate::ElementFormat;
use crate::error::{Error, Result};
use crate::step::{Scope, Stage};

/// How Muon scales the learning rate by the matrix's shape `A × B` (torch's `adjust_lr_fn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum AdjustLr {
    /// Keller Jordan's `lr · √max(1, A/B)` (torch's default, `None` or `"original"`).
    Original,
    /// Moonshot's `lr · 0.2 · √max(A, B)`, which lets Muon reuse AdamW's learning rate and
    /// weight decay (`"match_rms_adamw"`).
    MatchRmsAdamW,
    /// Bernstein's `lr · √(A/B)` (`"spectral_unclamped"`).
    SpectralUnclamped,
}

impl AdjustLr {
    /// The learning rate for a matrix of `rows × cols`, in f64 as torch's Python computes it.
    pub fn apply(self, lr: f64, rows: usize, cols: usize) -> f64 {
        let (a, b) = (rows as f64, cols as f64);
        lr * match self {
            AdjustLr::Original => (a / b).max(1.0).sqrt(),
            AdjustLr::MatchRmsAdamW => 0.2 * a.max(b).sqrt(),
            AdjustLr::SpectralUnclamped => (a / b).sqrt(),
        }
    }
}

/// The element format Newton–Schulz runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum NsPrecision {
    /// torch's: the matrix, its norm and every product's result rounded to bf16 (products
    /// accumulated in f32, as torch's CPU and CUDA bf16 GEMMs do).
    BF16,
    /// f32 throughout: slower on tensor-core GPUs, more exact.
    F32,
}

impl NsPrecision {
    fn format(self) -> ElementFormat {
        match self {
            NsPrecision::BF16 => ElementFormat::BF16,
            NsPrecision::F32 => ElementFormat::F32,
        }
    }
}

/// Muon (MomentUm Orthogonalized by Newton–Schulz), torch.optim.Muon's single-tensor path,
/// for 2-D parameters only (optimize the others with AdamW: [`muon_with_adamw`] builds both
/// groups).
/// ```text
/// B = lerp(B, g, 1 - momentum)                       (state momentum_buffer)
/// U = nesterov ? lerp(g, B, momentum) : B
/// X = bf16(U), transposed if rows > cols;  X = X / max(‖X‖_F, eps)
/// ns_steps times:  A = X Xᵀ;  A' = b A + c A A;  X = a X + A' X
/// O = X, transposed back;  p = p · (1 - lr · weight_decay);  p = p - adjust_lr(lr, rows, cols) · O
/// ```
/// The weight decay uses the unadjusted learning rate, as torch's.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Muon {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// Decoupled weight decay (default 0.1).
    pub weight_decay: f64,
    /// Momentum factor (default 0.95).
    pub momentum: f64,
    /// Nesterov momentum (default true).
    pub nesterov: bool,
    /// Coefficients (a, b, c) of the quintic iteration (default (3.4445, -4.775, 2.0315)).
    pub ns_coefficients: (f64, f64, f64),
    /// Floor of the Frobenius norm the matrix is divided by (default 1e-7).
    pub eps: f64,
    /// Newton–Schulz iterations (default 5; fewer than 100).
    pub ns_steps: u32,
    /// The learning rate's scaling by shape (default [`AdjustLr::Original`]).
    pub adjust_lr_fn: AdjustLr,
    /// The format Newton–Schulz runs in (default bf16, as torch).
    pub ns_precision: NsPrecision,
}

impl Default for Muon {
    fn default() -> Self {
        Muon {
            lr: 1e-3,
            weight_decay: 0.1,
            momentum: 0.95,
            nesterov: true,
            ns_coefficients: (3.4445, -4.775, 2.0315),
            eps: 1e-7,
            ns_steps: 5,
            adjust_lr_fn: AdjustLr::Original,
            ns_precision: NsPrecision::BF16,
        }
    }
}

impl Muon {
    /// With learning rate `lr` and torch's other defaults.
    pub fn new(lr: f64) -> Self {
        Muon { lr, ..Self::default() }
    }
    /// Sets `ns_coefficients` = (a, b, c).
    pub fn with_ns_coefficients(self, a: f64, b: f64, c: f64) -> Self {
        Muon { ns_coefficients: (a, b, c), ..self }
    }
    fn validate(&self) -> Result<()> {
        let name = "Muon";
        check(name, self.lr >= 0.0, || format!("Learning rate should be >= 0 but is: {}", py(self.lr)))?;
        check(name, self.momentum >= 0.0, || format!("momentum should be >= 0 but is: {}", py(self.momentum)))?;
        check(name, self.weight_decay >= 0.0, || {
            format!("weight decay should be >= 0 but is: {}", py(self.weight_decay))
        })?;
        check(name, self.ns_steps < 100, || {
            "Number of steps must be less than 100 for computational efficiency".into()
        })?;
        // torch leaves these unchecked; a NaN or infinite one makes every parameter NaN.
        let (a, b, c) = self.ns_coefficients;
        check(
            name,
            [a, b, c, self.eps, self.lr, self.momentum, self.weight_decay].iter().all(|x| x.is_finite()),
            || format!("hyper-parameters must be finite, got {self:?}"),
        )?;
        check(name, self.eps >= 0.0, || format!("eps should be >= 0 but is: {}", py(self.eps)))
    }
}
setters!(Muon {
    with_weight_decay => weight_decay: f64,
    with_momentum => momentum: f64,
    with_nesterov => nesterov: bool,
    with_eps => eps: f64,
    with_ns_steps => ns_steps: u32,
    with_adjust_lr_fn => adjust_lr_fn: AdjustLr,
    with_ns_precision => ns_precision: NsPrecision,
});

static KERNEL: Kernel = Kernel {
    family: "muon",
    source: include_str!("../../shaders/muon.wgsl"),
    state: &[StateSlot { role: "momentum", torch_name: "momentum_buffer", signed: true }],
    scalar_size: size_of::<Scalars>(),
    // The element-wise stages only (momentum lerp 1 fma, Nesterov lerp 1 fma, decay 1 mul,
    // update 1 fma, each 0.5 ulp on both sides); Newton–Schulz's error is its own
    // (`Muon::ns_error_budget`).
    step_error_budget: 4.0,
    // Momentum and the Frobenius norm of the update, the products of Newton–Schulz, the
    // update.
    stages: &[Stage::Reduce(Scope::Tensor), Stage::MatMul, Stage::Elementwise],
};

/// The per-step scalars (`struct Scalars` in shaders/muon.wgsl).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Scalars {
    one_minus_momentum: f32,
    momentum: f32,
    decay: f32,
    eps: f32,
    a: f32,
    b: f32,
    c: f32,
    neg_lr: f32,
}

impl Muon {
    fn host_scalars(&self) -> Scalars {
        let (a, b, c) = self.ns_coefficients;
        Scalars {
            one_minus_momentum: (1.0 - self.momentum) as f32,
            momentum: self.momentum as f32,
            decay: (1.0 - self.lr * self.weight_decay) as f32,
            eps: self.eps as f32,
            a: a as f32,
            b: b as f32,
            c: c as f32,
            neg_lr: (-self.lr) as f32,
        }
    }

    /// Newton–Schulz on `u` (`rows × cols`, row-major): the orthogonalised matrix, same
    /// layout, each value in [`ns_precision`](Self::ns_precision)'s format. torch's order
    /// of operations: the copy in the format, the transpose of a tall matrix, the division
    /// by the clamped norm, and per iteration `A = X Xᵀ`, `addmm(A, A, A, beta=b, alpha=c)`,
    /// `addmm(X, A', X, beta=a)`, each result rounded once to the format.
    /// `Err` names the lengths when `u` is not `rows × cols`.
    pub fn newton_schulz(&self, u: &[f32], rows: usize, cols: usize) -> Result<Vec<f32>> {
        let f = self.ns_precision.format();
        let round = |m: &mut Array2<f32>| m.mapv_inplace(|x| f.round(x));
        let s = self.host_scalars();
        let expected = rows.saturating_mul(cols);
        let view = ArrayView2::from_shape((rows, cols), u).map_err(|_| Error::LengthMismatch {
            what: "Muon::newton_schulz matrix",
            expected,
            actual: u.len(),
        })?;
        let tall = rows > cols;
        let mut x = if tall { view.t().to_owned() } else { view.to_owned() };
        round(&mut x);
        // The norm in f64, rounded once to the format (torch: an f32-accumulated reduction
        // rounded to the tensor's dtype); then clamped and divided in f32, rounded.
        let norm = f.round(x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt() as f32);
        let norm = norm.max(f.round(s.eps));
        x.mapv_inplace(|v| f.round(v / norm));
        let m = x.nrows();
        let mut gram = Array2::<f32>::zeros((m, m));
        let mut poly = Array2::<f32>::zeros((m, m));
        for _ in 0..self.ns_steps {
            general_mat_mul(1.0, &x, &x.t(), 0.0, &mut gram);
            round(&mut gram);
            poly.assign(&gram);
            general_mat_mul(s.c, &gram, &gram, s.b, &mut poly);
            round(&mut poly);
            let previous = x.clone();
            general_mat_mul(1.0, &poly, &previous, s.a, &mut x);
            round(&mut x);
        }
        let out = if tall { x.t().as_standard_layout().to_owned() } else { x };
        Ok(out.into_raw_vec_and_offset().0)
    }

    /// Checks that a parameter of `shape` is a matrix (torch's message otherwise).
    fn matrix(shape: &[usize]) -> Result<(usize, usize)> {
        match shape {
            [rows, cols] => Ok((*rows, *cols)),
            _ => Err(Error::InvalidHyperParameter {
                optimizer: "Muon",
                message: format!(
                    "Muon only supports 2D parameters whereas we found a parameter with size: torch.Size({shape:?}); \
                     optimize the others with AdamW (wgpu_optim::muon_with_adamw builds both groups)"
                ),
            }),
        }
    }
}

impl Optimizer for Muon {
    super::cycles_momentum!();
    common_methods!(KERNEL);
    fn name(&self) -> &'static str {
        "Muon"
    }
    fn reference(&self) -> &'static str {
        "torch.optim.Muon"
    }
    fn validate(&self) -> Result<()> {
        Muon::validate(self)
    }
    fn check_param_shape(&self, shape: &[usize]) -> Result<()> {
        Muon::matrix(shape).map(|_| ())
    }
    fn scalar_state(&self, _step: u64) -> Vec<(&'static str, f32)> {
        // torch's Muon keeps no `step`: its state is the momentum buffer alone.
        Vec::new()
    }
    /// `NS_STEPS` is also the number of iterations the GPU step records.
    fn constants(&self) -> Vec<(&'static str, f64)> {
        let adjust = match self.adjust_lr_fn {
            AdjustLr::Original => 0.0,
            AdjustLr::MatchRmsAdamW => 1.0,
            AdjustLr::SpectralUnclamped => 2.0,
        };
        vec![
            ("NESTEROV", super::flag(self.nesterov)),
            ("NS_BF16", super::flag(self.ns_precision == NsPrecision::BF16)),
            ("NS_STEPS", f64::from(self.ns_steps)),
            ("ADJUST", adjust),
        ]
    }
    fn scalars(&self, _step: u64) -> ScalarBlock {
        pack(&self.host_scalars())
    }
    /// Not called: a shaped step runs [`shaped_cpu`](Optimizer::shaped_cpu) with the shape.
    fn update_cpu(&self, _step: u64, _p: &mut [f32], _g: &[f32], _state: StateSlices<'_, '_>) {}
    fn shaped_cpu(
        &self,
        _step: u64,
        shape: &[usize],
        p: &mut [f32],
        g: &[f32],
        state: StateSlices<'_, '_>,
        _parallel: bool,
    ) -> Result<()> {
        let (rows, cols) = Muon::matrix(shape)?;
        let n = rows.checked_mul(cols).ok_or_else(|| Error::OverLimit(format!("Muon: shape {shape:?}")))?;
        let [buf] = state else {
            return Err(Error::LengthMismatch { what: "Muon state slots", expected: 1, actual: state.len() });
        };
        for (what, len) in [("params (shape)", p.len()), ("grads", g.len()), ("Muon momentum_buffer", buf.len())] {
            if len != n {
                return Err(Error::LengthMismatch { what, expected: n, actual: len });
            }
        }
        let s = self.host_scalars();
        // buf.lerp_(grad, 1 - momentum); update = grad.lerp(buf, momentum) if nesterov else buf
        let mut update = vec![0.0f32; n];
        for i in 0..n {
            buf[i] = lerp(buf[i], g[i], s.one_minus_momentum);
            update[i] = if self.nesterov { lerp(g[i], buf[i], s.momentum) } else { buf[i] };
        }
        let x = self.newton_schulz(&update, rows, cols)?;
        // param.mul_(1 - lr * weight_decay); param.add_(update, alpha=-adjusted_lr)
        let neg_lr = (-self.adjust_lr_fn.apply(self.lr, rows, cols)) as f32;
        for (p, &x) in p.iter_mut().zip(&x) {
            *p = x.mul_add(neg_lr, *p * s.decay);
        }
        Ok(())
    }
}

/// The usual Muon hybrid as parameter groups: every 2-D tensor to `muon` (with its shape),
/// every other tensor — biases, norms' weights — and the 2-D tensors listed in `to_adamw`
/// (the embedding, the output head, as Keller Jordan's and Moonshot's recipes keep them) to
/// `adamw`. `params`, `grads` and `shapes` are one per tensor; a group with no tensor is
/// left out. `Err` names the tensor whose shape does not match its length, or an index of
/// `to_adamw` past the tensors.
pub fn muon_with_adamw<'a>(
    muon: Muon,
    adamw: super::AdamW,
    params: &[&'a crate::GpuTensor],
    grads: &[&'a crate::GpuTensor],
    shapes: &[Vec<usize>],
    to_adamw: &[usize],
) -> Result<Vec<crate::ParamGroup<'a>>> {
    for (what, n) in [("grads (one per tensor)", grads.len()), ("shapes (one per tensor)", shapes.len())] {
        if n != params.len() {
            return Err(Error::LengthMismatch { what, expected: params.len(), actual: n });
        }
    }
    if let Some(&bad) = to_adamw.iter().find(|&&i| i >= params.len()) {
        return Err(Error::OverLimit(format!(
            "to_adamw names tensor {bad}, and there are {} tensors (indices 0..{})",
            params.len(),
            params.len()
        )));
    }
    for (p, shape) in params.iter().zip(shapes) {
        super::check_shape("a tensor's shape (its elements)", shape, p.len())?;
    }
    let to_muon = |t: usize| shapes[t].len() == 2 && !to_adamw.contains(&t);
    let (mut m, mut a) = ((Vec::new(), Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
    for t in 0..params.len() {
        if to_muon(t) {
            m.0.push(params[t]);
            m.1.push(grads[t]);
            m.2.push(shapes[t].clone());
        } else {
            a.0.push(params[t]);
            a.1.push(grads[t]);
        }
    }
    let mut groups = Vec::new();
    if !m.0.is_empty() {
        groups.push(crate::ParamGroup::new(muon, m.0, m.1).with_shapes(m.2));
    }
    if !a.0.is_empty() {
        groups.push(crate::ParamGroup::new(adamw, a.0, a.1));
    }
    Ok(groups)
}
