//! Convergence demos: every optimizer on the classic 2-D test functions (many starts as one
//! GPU batch) and on small models trained end to end on the GPU, as pictures and a table —
//! what `wgpu-optim demo` runs.

pub mod functions;
pub mod models;
pub mod plot;
pub mod precision;
mod run;
pub mod table;

use crate::error::Result;
use wgpu_optim::gpu::GpuContext;
use wgpu_optim::optim::{self, Optimizer, Sgd};

pub use functions::{Batch, FUNCTIONS, FunctionRun, TestFunction};
pub use models::{Model, ModelRun, Training, train_in};
pub use run::{DemoConfig, Report, function_rows, model_rows, model_threshold, run_all};
pub use table::{FunctionRow, ModelRow};

/// Runs with the label of their optimizer.
pub type Labelled<T> = Vec<(String, T)>;

/// The learning rates the demo sweeps (each optimizer on each problem keeps the best).
pub const LEARNING_RATES: [f64; 10] = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0];

/// Every optimizer with torch's defaults but the shaped one (Adafactor, which the models run
/// at their own learning rates), and SGD with momentum 0.9.
pub fn optimizers() -> Vec<(String, Box<dyn Optimizer>)> {
    let mut all: Vec<(String, Box<dyn Optimizer>)> = optim::ALL
        .iter()
        .map(|(_, make)| make())
        .filter(|o| !o.kernel().is_shaped())
        .map(|o| (o.name().to_string(), o))
        .collect();
    all.insert(1, ("SGD momentum".into(), Sgd::default().with_momentum(0.9).into()));
    all
}

/// The optimizers of the test functions: all but the staged ones (LAMB, LARS), whose
/// per-tensor norms would couple the batch's independent problems, which share one tensor.
pub fn function_optimizers() -> Vec<(String, Box<dyn Optimizer>)> {
    optimizers().into_iter().filter(|(_, o)| !o.kernel().is_staged()).collect()
}

/// An override constant's value for a flag.
pub(crate) fn flag(on: bool) -> f64 {
    if on { 1.0 } else { 0.0 }
}

/// A deterministic number in [0, 1) from `seed` and `i` (splitmix64).
pub fn unit(seed: u64, i: u64) -> f64 {
    let mut z = seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// A standard normal number from `seed` and `i` (Box–Muller).
pub fn normal(seed: u64, i: u64) -> f64 {
    let (a, b) = (unit(seed, 2 * i).max(f64::MIN_POSITIVE), unit(seed, 2 * i + 1));
    (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
}

/// The entry points of a standalone demo shader over one bind group: bindings
/// `0..storage` read-write storage buffers, binding `storage` a uniform buffer.
pub(crate) struct Kernels {
    pub layout: wgpu::BindGroupLayout,
    pub entries: Vec<wgpu::ComputePipeline>,
}

impl Kernels {
    pub fn new(
        ctx: &GpuContext,
        source: &str,
        entries: &[&str],
        storage: u32,
        constants: &[(&str, f64)],
    ) -> Result<Self> {
        Ok(ctx.scoped("compiling a demo kernel", || {
            let buffer = |binding, ty| wgpu::BindGroupLayoutEntry {
                binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer { ty, has_dynamic_offset: false, min_binding_size: None },
                count: None,
            };
            let mut layout_entries: Vec<_> =
                (0..storage).map(|b| buffer(b, wgpu::BufferBindingType::Storage { read_only: false })).collect();
            layout_entries.push(buffer(storage, wgpu::BufferBindingType::Uniform));
            let layout = ctx.device().create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("wgpu-optim demo"),
                entries: &layout_entries,
            });
            let pipeline_layout = ctx.device().create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("wgpu-optim demo"),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
            let module = ctx.device().create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("wgpu-optim demo"),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
            let entries = entries
                .iter()
                .map(|entry| {
                    ctx.device().create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(entry),
                        layout: Some(&pipeline_layout),
                        module: &module,
                        entry_point: Some(entry),
                        compilation_options: wgpu::PipelineCompilationOptions {
                            constants,
                            zero_initialize_workgroup_memory: true,
                        },
                        cache: None,
                    })
                })
                .collect();
            Kernels { layout, entries }
        })?)
    }

    /// A bind group of `resources`, in binding order.
    pub fn bind(&self, ctx: &GpuContext, resources: Vec<wgpu::BindingResource<'_>>) -> Result<wgpu::BindGroup> {
        Ok(ctx.scoped("binding a demo kernel", || {
            let entries: Vec<_> = resources
                .into_iter()
                .enumerate()
                .map(|(i, resource)| wgpu::BindGroupEntry { binding: i as u32, resource })
                .collect();
            ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("wgpu-optim demo"),
                layout: &self.layout,
                entries: &entries,
            })
        })?)
    }
}

/// A storage buffer holding `data` (readable back as a tensor).
pub(crate) fn storage_buffer<T: bytemuck::Pod>(ctx: &GpuContext, label: &str, data: &[T]) -> Result<wgpu::Buffer> {
    use wgpu::util::DeviceExt;
    Ok(ctx.scoped("creating a demo buffer", || {
        ctx.device().create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::cast_slice(data),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        })
    })?)
}

/// A uniform buffer holding `bytes`.
pub(crate) fn uniform_buffer(ctx: &GpuContext, label: &str, bytes: &[u8]) -> Result<wgpu::Buffer> {
    use wgpu::util::DeviceExt;
    Ok(ctx.scoped("creating a demo buffer", || {
        ctx.device().create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytes,
            usage: wgpu::BufferUsages::UNIFORM,
        })
    })?)
}

/// Runs `steps` steps of a demo on the GPU, 100 per submit: before each step and after the
/// last, `evaluate` records the forward/gradient work; after each evaluation but the last,
/// `step` records the optimizer's step. Returns the wall time, the GPU waited for.
pub(crate) fn drive(
    ctx: &GpuContext,
    steps: u32,
    mut evaluate: impl FnMut(&mut wgpu::CommandEncoder, u32),
    mut step: impl FnMut(&mut wgpu::CommandEncoder) -> Result<()>,
) -> Result<f64> {
    let start = std::time::Instant::now();
    let mut k = 0;
    while k <= steps {
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        let end = (k + 100).min(steps + 1);
        for j in k..end {
            evaluate(&mut encoder, j);
            if j < steps {
                step(&mut encoder)?;
            }
        }
        ctx.scoped("running a demo", || ctx.queue().submit([encoder.finish()]))?;
        k = end;
    }
    ctx.wait()?;
    Ok(start.elapsed().as_secs_f64())
}

/// The block of a sweep to keep: the lowest median of `score` over its starts (NaN and ±inf
/// count as worst), ties broken by the earlier (smaller) learning rate.
pub fn best_block<T>(blocks: &[T], score: impl Fn(&T) -> Vec<f64>) -> usize {
    let median = |mut v: Vec<f64>| {
        v.iter_mut().filter(|x| !x.is_finite()).for_each(|x| *x = f64::INFINITY);
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::INFINITY)
    };
    let medians: Vec<f64> = blocks.iter().map(|b| median(score(b))).collect();
    (0..blocks.len()).min_by(|&a, &b| medians[a].total_cmp(&medians[b]).then(a.cmp(&b))).unwrap_or(0)
}
