//! The classic 2-D test functions with known minima, and many independent starts of one
//! optimizer on one of them as a single GPU batch: thousands of 2-D problems are one tensor,
//! their analytic gradients one dispatch (shaders/demo/functions.wgsl) in the same encoder as
//! the step. Each learning rate of a sweep is a parameter group over its own block of starts.

use crate::error::{Error, Result};
use wgpu_optim::gpu::GpuContext;
use wgpu_optim::groups::{ParamGroup, ParamGroups};
use wgpu_optim::optim::Optimizer;
use wgpu_optim::tensor::GpuTensor;

use super::{Kernels, drive, storage_buffer, uniform_buffer, unit};

/// A test function: its formula (in the shader and [`TestFunction::value`]), where to look,
/// its minima and the classic start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TestFunction {
    /// Name for tables and files.
    pub name: &'static str,
    /// The shader's `FUNCTION`.
    pub id: u32,
    /// x range and y range of the picture and of the random starts.
    pub domain: [[f64; 2]; 2],
    /// Every minimum (the saddle's two; Himmelblau's four).
    pub minima: &'static [[f64; 2]],
    /// The value at the minima.
    pub f_min: f64,
    /// The classic start, whose path is drawn.
    pub start: [f64; 2],
}

/// Rosenbrock, Himmelblau, Beale, an ill-conditioned quadratic, a saddle.
pub const FUNCTIONS: [TestFunction; 5] = [
    TestFunction {
        name: "rosenbrock",
        id: 0,
        domain: [[-2.0, 2.0], [-1.0, 3.0]],
        minima: &[[1.0, 1.0]],
        f_min: 0.0,
        start: [-1.2, 1.0],
    },
    TestFunction {
        name: "himmelblau",
        id: 1,
        domain: [[-5.0, 5.0], [-5.0, 5.0]],
        minima: &[[3.0, 2.0], [-2.805118, 3.131312], [-3.779310, -3.283186], [3.584428, -1.848126]],
        f_min: 0.0,
        start: [0.0, 0.0],
    },
    TestFunction {
        name: "beale",
        id: 2,
        domain: [[-4.5, 4.5], [-4.5, 4.5]],
        minima: &[[3.0, 0.5]],
        f_min: 0.0,
        start: [1.0, 1.0],
    },
    TestFunction {
        name: "quadratic",
        id: 3,
        domain: [[-3.0, 3.0], [-3.0, 3.0]],
        minima: &[[0.0, 0.0]],
        f_min: 0.0,
        start: [-2.5, 2.0],
    },
    TestFunction {
        name: "saddle",
        id: 4,
        domain: [[-2.0, 2.0], [-2.0, 2.0]],
        minima: &[[0.0, 1.0], [0.0, -1.0]],
        f_min: -0.25,
        start: [1.5, 1e-3],
    },
];

impl TestFunction {
    /// The value, in f64 (the shader's formula; for tables and pictures).
    pub fn value(&self, x: f64, y: f64) -> f64 {
        match self.id {
            0 => (1.0 - x).powi(2) + 100.0 * (y - x * x).powi(2),
            1 => (x * x + y - 11.0).powi(2) + (x + y * y - 7.0).powi(2),
            2 => (1.5 - x + x * y).powi(2) + (2.25 - x + x * y * y).powi(2) + (2.625 - x + x * y.powi(3)).powi(2),
            3 => {
                let (c, s) = (30f64.to_radians().cos(), 0.5);
                let (u, v) = (c * x + s * y, -s * x + c * y);
                0.5 * (u * u + 50.0 * v * v)
            }
            _ => x * x - 0.5 * y * y + 0.25 * y.powi(4),
        }
    }

    /// Distance from (x, y) to the nearest minimum.
    pub fn distance_to_minimum(&self, x: f64, y: f64) -> f64 {
        self.minima.iter().map(|m| (x - m[0]).hypot(y - m[1])).fold(f64::INFINITY, f64::min)
    }

    /// `n` starts: the classic one, then uniform in the domain (deterministic in `seed`).
    pub fn starts(&self, n: usize, seed: u64) -> Vec<[f32; 2]> {
        let [[x0, x1], [y0, y1]] = self.domain;
        (0..n)
            .map(|i| {
                if i == 0 {
                    return self.start.map(|v| v as f32);
                }
                let (a, b) = (unit(seed, 2 * i as u64), unit(seed, 2 * i as u64 + 1));
                [(x0 + (x1 - x0) * a) as f32, (y0 + (y1 - y0) * b) as f32]
            })
            .collect()
    }
}

/// One learning rate's block of a batch, after the run.
#[derive(Clone, Debug)]
pub struct FunctionRun {
    /// The learning rate.
    pub lr: f64,
    /// The classic start's (x, y, f) before each step and after the last.
    pub path: Vec<[f32; 3]>,
    /// Where every start ended.
    pub ends: Vec<[f32; 2]>,
    /// For every start, the first step count at which f - f_min fell below the threshold
    /// (`u32::MAX`: never).
    pub hits: Vec<u32>,
    /// Wall time of the whole batch (every block), seconds.
    pub seconds: f64,
}

/// What a batch runs: `steps` steps from `starts` starts per learning rate.
#[derive(Clone, Copy, Debug)]
pub struct Batch {
    /// Starts per learning rate (a multiple of 32: blocks start on aligned offsets).
    pub starts: usize,
    /// Steps.
    pub steps: u32,
    /// f - f_min below which a start counts as having reached the minimum.
    pub threshold: f32,
    /// Seed of the random starts.
    pub seed: u64,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Info {
    starts: u32,
    per_block: u32,
    blocks: u32,
    threshold: f32,
    f_min: f32,
    _pad: [u32; 3],
}

/// Runs `optimizer` on `f` at each of `lrs` (a parameter group each) from the same starts,
/// all in one batch on the GPU: per step, the gradient dispatch, then every group's step.
pub fn run(
    ctx: &GpuContext,
    f: &TestFunction,
    optimizer: &dyn Optimizer,
    lrs: &[f64],
    batch: Batch,
) -> Result<Vec<FunctionRun>> {
    if batch.starts == 0 || !batch.starts.is_multiple_of(32) || lrs.is_empty() {
        return Err(Error::DemoArgument(format!(
            "batch.starts is {}: use a positive multiple of 32 starts per learning rate",
            batch.starts
        )));
    }
    let blocks = lrs.len();
    let per = batch.starts;
    let starts = f.starts(per, batch.seed);
    let host: Vec<f32> = (0..blocks).flat_map(|_| starts.iter().flatten().copied()).collect();
    let p = GpuTensor::from_slice(ctx, &host)?;
    let g = GpuTensor::zeros(ctx, host.len())?;
    if p.segments().len() != 1 {
        return Err(Error::DemoArgument(format!(
            "{} starts do not fit one binding; use fewer starts or learning rates",
            blocks * per
        )));
    }
    let views = (0..blocks)
        .map(|b| Ok((p.slice(ctx, 2 * per * b, 2 * per)?, g.slice(ctx, 2 * per * b, 2 * per)?)))
        .collect::<Result<Vec<_>>>()?;
    let configs = lrs
        .iter()
        .map(|&lr| {
            let mut o = optimizer.clone_box();
            o.set_lr(lr);
            o.validate().map(|()| o)
        })
        .collect::<wgpu_optim::Result<Vec<_>>>()?;
    let mut groups = ParamGroups::new(
        ctx,
        configs
            .into_iter()
            .zip(&views)
            .map(|(o, (vp, vg))| ParamGroup {
                optimizer: o,
                params: vec![vp],
                grads: vec![vg],
                shapes: Vec::new(),
                precision: Default::default(),
            })
            .collect(),
    )?;

    let n = blocks * per;
    let path_len = 3 * (batch.steps as usize + 1) * blocks;
    let hit = storage_buffer(ctx, "demo hits", &vec![u32::MAX; n])?;
    let path = storage_buffer(ctx, "demo path", &vec![0u32; path_len])?;
    let counter = storage_buffer(ctx, "demo counter", &[0u32; 4])?;
    let info = Info {
        starts: n as u32,
        per_block: per as u32,
        blocks: blocks as u32,
        threshold: batch.threshold,
        f_min: f.f_min as f32,
        _pad: [0; 3],
    };
    let info = uniform_buffer(ctx, "demo info", bytemuck::bytes_of(&info))?;
    const SOURCE: &str = include_str!("../../shaders/demo/functions.wgsl");
    let kernels = Kernels::new(ctx, SOURCE, &["gradient", "tick"], 5, &[("FUNCTION", f64::from(f.id))])?;
    let (gradient, tick) = (&kernels.entries[0], &kernels.entries[1]);
    let bind = kernels.bind(
        ctx,
        vec![
            p.segments()[0].binding(),
            g.segments()[0].binding(),
            hit.as_entire_binding(),
            path.as_entire_binding(),
            counter.as_entire_binding(),
            info.as_entire_binding(),
        ],
    )?;
    // Before step k: the counter's advance (k > 0), then the gradients at the current points.
    let evaluate = |encoder: &mut wgpu::CommandEncoder, k: u32| {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_bind_group(0, &bind, &[]);
        if k > 0 {
            pass.set_pipeline(tick);
            pass.dispatch_workgroups(1, 1, 1);
        }
        pass.set_pipeline(gradient);
        pass.dispatch_workgroups((n as u32).div_ceil(64), 1, 1);
    };
    let seconds = drive(ctx, batch.steps, evaluate, |encoder| Ok(groups.record(encoder, 1)?))?;

    let read =
        |b: &wgpu::Buffer, len: usize| -> Result<Vec<f32>> { Ok(GpuTensor::from_buffer(ctx, b, 0, len)?.read(ctx)?) };
    let path = read(&path, path_len)?;
    let hits: Vec<u32> = read(&hit, n)?.into_iter().map(f32::to_bits).collect();
    let ends = p.read(ctx)?;
    Ok(lrs
        .iter()
        .enumerate()
        .map(|(b, &lr)| FunctionRun {
            lr,
            path: (0..=batch.steps as usize)
                .map(|t| {
                    let at = 3 * (t * blocks + b);
                    [path[at], path[at + 1], path[at + 2]]
                })
                .collect(),
            ends: ends[2 * per * b..2 * per * (b + 1)].chunks_exact(2).map(|c| [c[0], c[1]]).collect(),
            hits: hits[per * b..per * (b + 1)].to_vec(),
            seconds,
        })
        .collect())
}
