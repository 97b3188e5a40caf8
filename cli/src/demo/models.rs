//! Small models trained end to end on the GPU: linear regression and a 2-layer MLP
//! classifier on a mixture of Gaussians. Forward and backward are WGSL
//! (shaders/demo/models.wgsl) in the same encoder as the step; learning-rate schedules
//! (warmup then cosine) and global-norm clipping are options of the training.

use crate::error::{Error, Result};
use wgpu_optim::clip::GradControl;
use wgpu_optim::gpu::GpuContext;
use wgpu_optim::groups::{ParamGroup, ParamGroups};
use wgpu_optim::optim::{Adafactor, Optimizer};
use wgpu_optim::schedule::{CosineAnnealingLr, LinearLr, SequentialLr};
use wgpu_optim::tensor::GpuTensor;

use super::{Kernels, drive, normal, storage_buffer, uniform_buffer, unit};

/// Hidden units and classes of the MLP (the shader's constants).
pub const HIDDEN: usize = 32;
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
        Model { name: "linear-regression", x, y, init: vec![0.0; FEATURES + 1] }
    }

    /// A 2-layer MLP (2 → 32 tanh → 3) on 1200 points of six Gaussians (σ 0.45) on a circle
    /// of radius 2, opposite Gaussians sharing a class, so no line separates the classes.
    /// Weights start as torch's `nn.Linear`: uniform in ±1/√fan_in.
    pub fn mlp(seed: u64) -> Self {
        let per = 200;
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
        let (w1, w2) = (HIDDEN * 2 + HIDDEN, CLASSES * HIDDEN + CLASSES);
        let bound = |fan_in: f64| 1.0 / fan_in.sqrt();
        let init = (0..w1)
            .map(|i| bound(2.0) * (2.0 * unit(seed ^ 5, i as u64) - 1.0))
            .chain((0..w2).map(|i| bound(HIDDEN as f64) * (2.0 * unit(seed ^ 6, i as u64) - 1.0)))
            .map(|v| v as f32)
            .collect();
        Model { name: "mlp", x, y, init }
    }

    /// Samples.
    pub fn samples(&self) -> usize {
        self.y.len()
    }

    fn id(&self) -> u32 {
        u32::from(self.name == "mlp")
    }

    /// The MLP's class scores at `(px, py)` for parameters `p` (the shader's forward, on the
    /// host, for the decision-region picture).
    pub fn mlp_class(p: &[f32], px: f32, py: f32) -> usize {
        let (w2, b2) = (HIDDEN * 3, HIDDEN * 3 + CLASSES * HIDDEN);
        let h: Vec<f32> = (0..HIDDEN).map(|k| (p[HIDDEN * 2 + k] + p[2 * k] * px + p[2 * k + 1] * py).tanh()).collect();
        (0..CLASSES)
            .map(|c| p[b2 + c] + (0..HIDDEN).map(|k| p[w2 + c * HIDDEN + k] * h[k]).sum::<f32>())
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
    let (n, np) = (model.samples(), model.init.len());
    // Adafactor keeps its own relative step size: no schedule and no clipping for it.
    let own_step = optimizer.is_none();
    let mut o = optimizer.map_or_else(|| Adafactor::new(lr).into(), |o| o.clone_box());
    o.set_lr(lr);
    o.validate()?;
    let (p, g) = (GpuTensor::from_slice(ctx, &model.init)?, GpuTensor::zeros(ctx, np)?);
    let mut groups = ParamGroups::new(ctx, vec![ParamGroup::new(o, vec![&p], vec![&g])])?;
    if !own_step {
        {
            if training.warmup_cosine {
                let warmup = u64::from(training.steps / 10).max(1);
                let total = u64::from(training.steps);
                let schedule = SequentialLr::new(
                    vec![LinearLr::new(0.01, 1.0, warmup)?.into(), CosineAnnealingLr::new(total - warmup, 0.0)?.into()],
                    vec![warmup],
                )?;
                groups.set_schedule(Some(schedule.into()))?;
            }
            if let Some(max_norm) = training.clip {
                groups.set_grad_control(Some(GradControl { max_norm: Some(max_norm), ..Default::default() }))?;
            }
        }
    }
    let (params, grads) = (groups.groups()[0].params().clone(), groups.groups()[0].grads().clone());
    if params.segments().len() != 1 {
        return Err(Error::DemoArgument("the model does not fit one binding; use a smaller model".into()));
    }
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
        &[("MODEL", f64::from(model.id()))],
    )?;
    let bind = kernels.bind(
        ctx,
        vec![
            params.segments()[0].binding(),
            grads.segments()[0].binding(),
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
        pass.set_bind_group(0, &bind, &[]);
        for (kernel, groups) in kernels.entries.iter().zip([(n as u32).div_ceil(64), (np as u32).div_ceil(64), 1]) {
            pass.set_pipeline(kernel);
            pass.dispatch_workgroups(groups, 1, 1);
        }
    };
    let seconds = drive(ctx, training.steps, |encoder, _| backward(encoder), |encoder| Ok(groups.record(encoder, 1)?))?;
    let h = GpuTensor::from_buffer(ctx, &history, 0, 2 * (training.steps as usize + 1))?.read(ctx)?;
    Ok(ModelRun { lr, history: h.chunks_exact(2).map(|c| [c[0], c[1]]).collect(), params: params.read(ctx)?, seconds })
}
