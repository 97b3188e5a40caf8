//! Small models trained end to end on the GPU: linear regression and a 2-layer MLP
//! classifier on a mixture of Gaussians. Forward and backward are WGSL
//! (shaders/demo/models.wgsl) in the same encoder as the step; learning-rate schedules
//! (warmup then cosine) and global-norm clipping are options of the training.

use crate::error::{Error, Result};
use wgpu_optim::clip::GradControl;
use wgpu_optim::gpu::GpuContext;
use wgpu_optim::groups::{ParamGroup, ParamGroups};
use wgpu_optim::optim::{Adafactor, AdamW, Muon, Optimizer, muon_with_adamw};
use wgpu_optim::schedule::{CosineAnnealingLr, LinearLr, SequentialLr};
use wgpu_optim::tensor::GpuTensor;

use super::{Kernels, drive, normal, storage_buffer, uniform_buffer, unit};

/// Hidden units of the MLP, and of the wide MLP (at most the shader's H_MAX).
pub const HIDDEN: usize = 32;
/// Hidden units of the wide MLP.
pub const WIDE_HIDDEN: usize = 1024;
/// Classes of the Gaussian mixture.
pub const CLASSES: usize = 3;
/// Features of the linear regression.
pub const FEATURES: usize = 8;

/// A model and its data set.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// `linear-regression` or `mlp`.
    pub name: &'static str,
    /// Inputs, `n × inputs`, row-major.
    pub x: Vec<f32>,
    /// Targets (regression) or class indices (classification).
    pub y: Vec<f32>,
    /// Initial parameters.
    pub init: Vec<f32>,
    /// The MLP's hidden units (0 for linear regression).
    pub hidden: usize,
}

impl Model {
    /// Linear regression: 1024 samples of 8 features uniform in [-1, 1), targets
    /// `x·w* + 0.5 + N(0, 0.01²)` with `w*` standard normal. Minimum loss ≈ 5e-5.
    pub fn linear_regression(seed: u64) -> Self {
        let n = 1024;
        let truth: Vec<f64> = (0..FEATURES).map(|d| normal(seed ^ 1, d as u64)).collect();
        let x: Vec<f32> = (0..n * FEATURES).map(|i| (2.0 * unit(seed ^ 2, i as u64) - 1.0) as f32).collect();
        let y = (0..n)
            .map(|i| {
                let dot: f64 = (0..FEATURES).map(|d| truth[d] * f64::from(x[i * FEATURES + d])).sum();
                (dot + 0.5 + 0.01 * normal(seed ^ 3, i as u64)) as f32
            })
            .collect();
        Model { name: "linear-regression", x, y, init: vec![0.0; FEATURES + 1], hidden: 0 }
    }

    /// A 2-layer MLP (2 → 32 tanh → 3) on 1200 points of six Gaussians (σ 0.45) on a circle
    /// of radius 2, opposite Gaussians sharing a class, so no line separates the classes.
    /// Weights start as torch's `nn.Linear`: uniform in ±1/√fan_in.
    pub fn mlp(seed: u64) -> Self {
        Self::mlp_of("mlp", HIDDEN, 200, seed)
    }

    /// The same classifier with 1024 hidden units on 100 samples per blob: 6147 parameters,
    /// a tensor large enough for 8-bit state (at least 4096 elements), for the
    /// mixed-precision comparison.
    pub fn wide_mlp(seed: u64) -> Self {
        Self::mlp_of("mlp-wide", WIDE_HIDDEN, 100, seed)
    }

    /// An MLP of `hidden` units on `per` samples of each of the mixture's six blobs.
    fn mlp_of(name: &'static str, hidden: usize, per: usize, seed: u64) -> Self {
        let mut x = Vec::with_capacity(2 * 6 * per);
        let mut y = Vec::with_capacity(6 * per);
        for blob in 0..6 {
            let angle = std::f64::consts::TAU * blob as f64 / 6.0;
            for i in 0..per {
                let k = (blob * per + i) as u64;
                x.push((2.0 * angle.cos() + 0.45 * normal(seed ^ 4, 2 * k)) as f32);
                x.push((2.0 * angle.sin() + 0.45 * normal(seed ^ 4, 2 * k + 1)) as f32);
                y.push((blob % CLASSES) as f32);
            }
        }
        let (w1, w2) = (hidden * 2 + hidden, CLASSES * hidden + CLASSES);
        let bound = |fan_in: f64| 1.0 / fan_in.sqrt();
        let init = (0..w1)
            .map(|i| bound(2.0) * (2.0 * unit(seed ^ 5, i as u64) - 1.0))
            .chain((0..w2).map(|i| bound(hidden as f64) * (2.0 * unit(seed ^ 6, i as u64) - 1.0)))
            .map(|v| v as f32)
            .collect();
        Model { name, x, y, init, hidden }
    }

    /// Samples.
    pub fn samples(&self) -> usize {
        self.y.len()
    }

    fn id(&self) -> u32 {
        u32::from(self.hidden > 0)
    }

    /// The MLP's class scores at `(px, py)` for parameters `p` (the shader's forward, on the
    /// host, for the decision-region picture).
    pub fn mlp_class(&self, p: &[f32], px: f32, py: f32) -> usize {
        let hidden = self.hidden;
        let (w2, b2) = (hidden * 3, hidden * 3 + CLASSES * hidden);
        let h: Vec<f32> = (0..hidden).map(|k| (p[hidden * 2 + k] + p[2 * k] * px + p[2 * k + 1] * py).tanh()).collect();
        (0..CLASSES)
            .map(|c| p[b2 + c] + (0..hidden).map(|k| p[w2 + c * hidden + k] * h[k]).sum::<f32>())
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (c, s)| if s > best.1 { (c, s) } else { best })
            .0
    }
}

/// How a model is trained.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Training {
    /// Steps (full batch each).
    pub steps: u32,
    /// Linear warmup over the first 10 % of the steps, then cosine to 0 (element-wise
    /// optimizers; Adafactor keeps its own relative step).
    pub warmup_cosine: bool,
    /// Clip the gradient's global 2-norm to this (element-wise optimizers).
    pub clip: Option<f32>,
}

/// One training run.
#[derive(Clone, Debug)]
pub struct ModelRun {
    /// The learning rate.
    pub lr: f64,
    /// (loss, accuracy) before each step and after the last.
    pub history: Vec<[f32; 2]>,
    /// The trained parameters.
    pub params: Vec<f32>,
    /// Wall time, seconds.
    pub seconds: f64,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Info {
    n: u32,
    params: u32,
    _pad: [u32; 2],
}

/// Trains `model` with `optimizer` at learning rate `lr` (`None`: Adafactor at `lr`).
pub fn train(
    ctx: &GpuContext,
    model: &Model,
    optimizer: Option<&dyn Optimizer>,
    lr: f64,
    training: Training,
) -> Result<ModelRun> {
    train_in(ctx, model, optimizer, lr, training, &crate::bench::MODES[0])
}

/// [`train`] with the parameters, gradients and state stored in `mode`: with 16-bit
/// parameters the model reads them widened to f32 and its f32 gradients are stored in their
/// format before each step (as a mixed-precision training loop casts them).
pub fn train_in(
    ctx: &GpuContext,
    model: &Model,
    optimizer: Option<&dyn Optimizer>,
    lr: f64,
    training: Training,
    mode: &crate::bench::Mode,
) -> Result<ModelRun> {
    train_with(ctx, model, optimizer, None, lr, training, mode)
}

/// Trains the MLP with Muon on its weight matrices and AdamW on its biases (the usual
/// hybrid, [`muon_with_adamw`]), both at learning rate `lr`.
pub fn train_muon(ctx: &GpuContext, model: &Model, lr: f64, training: Training) -> Result<ModelRun> {
    if model.hidden == 0 {
        return Err(Error::DemoArgument("Muon takes the MLP's weight matrices; linear regression has none".into()));
    }
    train_with(ctx, model, None, Some(Muon::new(lr)), lr, training, &crate::bench::MODES[0])
}

#[allow(clippy::too_many_arguments)]
fn train_with(
    ctx: &GpuContext,
    model: &Model,
    optimizer: Option<&dyn Optimizer>,
    muon_split: Option<Muon>,
    lr: f64,
    training: Training,
    mode: &crate::bench::Mode,
) -> Result<ModelRun> {
    let (n, np) = (model.samples(), model.init.len());
    let format = mode.params;
    let (p, g) = (GpuTensor::from_f32s_as(ctx, format, &model.init)?, GpuTensor::zeros_of(ctx, format, np)?);
    let mut stepping = match muon_split {
        // Muon on the MLP's weight matrices, AdamW on its biases: each its own tensor, the
        // model's gradients copied in before the step and the parameters back after it.
        Some(muon) => {
            let hybrid = Hybrid::new(ctx, model, muon, lr)?;
            let groups = hybrid.groups(ctx, training)?;
            Stepping::Hybrid(hybrid, groups)
        }
        None => {
            // Adafactor keeps its own relative step size: no schedule and no clipping for it.
            let own_step = optimizer.is_none();
            let o = optimizer.map_or_else(|| Adafactor::new(lr).into(), |o| o.clone_box());
            let mut o = mode.optimizer(&*o)?;
            o.set_lr(lr);
            o.validate()?;
            let group = ParamGroup::new(o, vec![&p], vec![&g]).with_precision(mode.precision);
            let mut groups = ParamGroups::new(ctx, vec![group])?;
            if !own_step {
                if training.warmup_cosine {
                    groups.set_schedule(Some(warmup_cosine(training)?))?;
                }
                if let Some(max_norm) = training.clip {
                    groups.set_grad_control(Some(GradControl { max_norm: Some(max_norm), ..Default::default() }))?;
                }
            }
            Stepping::Flat(groups)
        }
    };
    let (params, grads) = match &stepping {
        Stepping::Flat(groups) => (groups.groups()[0].params().clone(), groups.groups()[0].grads().clone()),
        Stepping::Hybrid(..) => (p.clone(), g.clone()),
    };
    if params.segments().len() != 1 {
        return Err(Error::DemoArgument("the model does not fit one binding; use a smaller model".into()));
    }
    // The model's f32 parameters and gradients: the optimizer's own, or f32 views of 16-bit
    // ones, converted on the GPU before and after the model's pass.
    let halves = format.is_packed().then(|| Halves::new(ctx, &params, &grads, format)).transpose()?;
    let (model_p, model_g) = match &halves {
        Some(h) => (h.p32.as_entire_binding(), h.g32.as_entire_binding()),
        None => (params.segments()[0].binding(), grads.segments()[0].binding()),
    };
    let x = storage_buffer(ctx, "demo x", &model.x)?;
    let y = storage_buffer(ctx, "demo y", &model.y)?;
    let rows = storage_buffer(ctx, "demo gradient rows", &vec![0f32; n * np])?;
    let sample = storage_buffer(ctx, "demo sample stats", &vec![0f32; 2 * n])?;
    let history = storage_buffer(ctx, "demo history", &vec![0f32; 2 * (training.steps as usize + 1)])?;
    let counter = storage_buffer(ctx, "demo counter", &[0u32; 4])?;
    let info =
        uniform_buffer(ctx, "demo info", bytemuck::bytes_of(&Info { n: n as u32, params: np as u32, _pad: [0; 2] }))?;
    const SOURCE: &str = include_str!("../../shaders/demo/models.wgsl");
    let kernels = Kernels::new(
        ctx,
        SOURCE,
        &["per_sample", "reduce_grads", "reduce_stats"],
        8,
        &[("MODEL", f64::from(model.id())), ("H", model.hidden.max(1) as f64)],
    )?;
    let bind = kernels.bind(
        ctx,
        vec![
            model_p,
            model_g,
            x.as_entire_binding(),
            y.as_entire_binding(),
            rows.as_entire_binding(),
            sample.as_entire_binding(),
            history.as_entire_binding(),
            counter.as_entire_binding(),
            info.as_entire_binding(),
        ],
    )?;
    let backward = |encoder: &mut wgpu::CommandEncoder| {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        if let Some(h) = &halves {
            h.record(&mut pass, 0);
        }
        pass.set_bind_group(0, &bind, &[]);
        for (kernel, groups) in kernels.entries.iter().zip([(n as u32).div_ceil(64), (np as u32).div_ceil(64), 1]) {
            pass.set_pipeline(kernel);
            pass.dispatch_workgroups(groups, 1, 1);
        }
        if let Some(h) = &halves {
            h.record(&mut pass, 1);
        }
    };
    let seconds = drive(
        ctx,
        training.steps,
        |encoder, _| backward(encoder),
        |encoder| match &mut stepping {
            Stepping::Hybrid(h, groups) => h.record(encoder, &params, &grads, groups),
            Stepping::Flat(groups) => Ok(groups.record(encoder, 1)?),
        },
    )?;
    let h = GpuTensor::from_buffer(ctx, &history, 0, 2 * (training.steps as usize + 1))?.read(ctx)?;
    Ok(ModelRun { lr, history: h.chunks_exact(2).map(|c| [c[0], c[1]]).collect(), params: params.read(ctx)?, seconds })
}

/// The f32 views of 16-bit parameters and gradients a model reads and writes, and the
/// kernels that convert them (shaders/demo/convert.wgsl over the crate's conversions).
struct Halves {
    p32: wgpu::Buffer,
    g32: wgpu::Buffer,
    kernels: Kernels,
    /// Widen the parameters; narrow the gradients.
    groups: [wgpu::BindGroup; 2],
    words: u32,
}

impl Halves {
    fn new(ctx: &GpuContext, params: &GpuTensor, grads: &GpuTensor, format: wgpu_optim::ElementFormat) -> Result<Self> {
        let n = params.len();
        let (p32, g32) = (
            storage_buffer(ctx, "demo f32 params", &vec![0f32; n])?,
            storage_buffer(ctx, "demo f32 grads", &vec![0f32; n])?,
        );
        let info = uniform_buffer(ctx, "demo conversion", bytemuck::bytes_of(&[n as u32, 0, 0, 0]))?;
        let source = format!("{}\n{}", wgpu_optim::format::WGSL, include_str!("../../shaders/demo/convert.wgsl"));
        let f16 = crate::demo::flag(format == wgpu_optim::ElementFormat::F16);
        let kernels = Kernels::new(ctx, &source, &["widen", "narrow"], 2, &[("F16", f16)])?;
        let bind = |half: &GpuTensor, full: &wgpu::Buffer| {
            kernels.bind(ctx, vec![half.segments()[0].binding(), full.as_entire_binding(), info.as_entire_binding()])
        };
        let groups = [bind(params, &p32)?, bind(grads, &g32)?];
        Ok(Halves { p32, g32, kernels, groups, words: (n as u32).div_ceil(2) })
    }

    /// Records conversion `k` (0: widen the parameters, 1: narrow the gradients).
    fn record(&self, pass: &mut wgpu::ComputePass<'_>, k: usize) {
        pass.set_pipeline(&self.kernels.entries[k]);
        pass.set_bind_group(0, &self.groups[k], &[]);
        pass.dispatch_workgroups(self.words.div_ceil(64), 1, 1);
    }
}

/// What steps a model's parameters: one optimizer's groups over the flat vector, or the
/// Muon hybrid over tensors of its own.
enum Stepping {
    Flat(ParamGroups),
    Hybrid(Hybrid, ParamGroups),
}

/// Linear warmup over the first 10 % of the steps, then cosine to 0.
fn warmup_cosine(training: Training) -> Result<Box<dyn wgpu_optim::schedule::Schedule>> {
    let warmup = u64::from(training.steps / 10).max(1);
    let total = u64::from(training.steps);
    let schedule = SequentialLr::new(
        vec![LinearLr::new(0.01, 1.0, warmup)?.into(), CosineAnnealingLr::new(total - warmup, 0.0)?.into()],
        vec![warmup],
    )?;
    Ok(schedule.into())
}

/// The MLP's parameters as Muon and AdamW see them: W1 (hidden × 2), b1, W2 (classes ×
/// hidden), b2 as tensors of their own, and the ranges of the model's flat vector they copy
/// from and to.
struct Hybrid {
    tensors: Vec<(GpuTensor, GpuTensor, std::ops::Range<usize>, Vec<usize>)>,
    muon: Muon,
    lr: f64,
}

impl Hybrid {
    fn new(ctx: &GpuContext, model: &Model, muon: Muon, lr: f64) -> Result<Self> {
        let h = model.hidden;
        let layout: [(usize, Vec<usize>); 4] =
            [(2 * h, vec![h, 2]), (h, vec![h]), (CLASSES * h, vec![CLASSES, h]), (CLASSES, vec![CLASSES])];
        let init = &model.init;
        let mut at = 0;
        let mut tensors = Vec::new();
        for (len, shape) in layout {
            let range = at..at + len;
            tensors.push((
                GpuTensor::from_slice(ctx, &init[range.clone()])?,
                GpuTensor::zeros(ctx, len)?,
                range,
                shape,
            ));
            at += len;
        }
        Ok(Hybrid { tensors, muon, lr })
    }

    fn groups(&self, ctx: &GpuContext, training: Training) -> Result<ParamGroups> {
        let ps: Vec<&GpuTensor> = self.tensors.iter().map(|t| &t.0).collect();
        let gs: Vec<&GpuTensor> = self.tensors.iter().map(|t| &t.1).collect();
        let shapes: Vec<Vec<usize>> = self.tensors.iter().map(|t| t.3.clone()).collect();
        let groups = muon_with_adamw(self.muon.clone(), AdamW::new(self.lr), &ps, &gs, &shapes, &[])?;
        let mut groups = ParamGroups::new(ctx, groups)?;
        if training.warmup_cosine {
            groups.set_schedule(Some(warmup_cosine(training)?))?;
        }
        if let Some(max_norm) = training.clip {
            groups.set_grad_control(Some(GradControl { max_norm: Some(max_norm), ..Default::default() }))?;
        }
        Ok(groups)
    }

    /// The model's gradients into the groups' tensors, one step, the parameters back.
    fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        params: &GpuTensor,
        grads: &GpuTensor,
        groups: &mut ParamGroups,
    ) -> Result<()> {
        let (p, g) = (&params.segments()[0], &grads.segments()[0]);
        for (_, t, range, _) in &self.tensors {
            let s = &t.segments()[0];
            encoder.copy_buffer_to_buffer(
                &g.buffer,
                g.offset + 4 * range.start as u64,
                &s.buffer,
                s.offset,
                4 * range.len() as u64,
            );
        }
        groups.record(encoder, 1)?;
        for (t, _, range, _) in &self.tensors {
            let s = &t.segments()[0];
            encoder.copy_buffer_to_buffer(
                &s.buffer,
                s.offset,
                &p.buffer,
                p.offset + 4 * range.start as u64,
                4 * range.len() as u64,
            );
        }
        Ok(())
    }
}
