//! Running a workload — one optimizer over a tensor set — on the GPU and on the CPU from the
//! same inputs, checking the GPU against the CPU, and timing each side.

use rayon::prelude::*;

use crate::error::{Error, Result};
use wgpu_optim::cpu::{CpuOptimizer, Threads};
use wgpu_optim::gpu::GpuContext;
use wgpu_optim::gpu_optimizer::SCALAR_SLOTS;
use wgpu_optim::groups::{ParamGroup, ParamGroups};
use wgpu_optim::optim::Optimizer;
use wgpu_optim::tensor::GpuTensor;

use super::check::{max_change, worst_error};
use super::timing::{Timed, timed};
use super::{MODES, Mode, TensorSet, inputs};

/// How GPU time is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// Timestamp queries written by the GPU before and after the work.
    Timestamps,
    /// Host time from submit to completion (adapters without timestamp queries).
    WallClock,
}

impl Clock {
    /// For tables.
    pub fn label(self) -> &'static str {
        match self {
            Clock::Timestamps => "GPU timestamp queries",
            Clock::WallClock => "wall clock from submit to completion",
        }
    }
}

/// Times GPU work with timestamp queries where the device has them, else by wall clock.
pub struct GpuClock {
    queries: Option<(wgpu::QuerySet, wgpu::Buffer, wgpu::Buffer)>,
    nanoseconds_per_tick: f64,
}

impl GpuClock {
    /// Timestamps when the device was created with `TIMESTAMP_QUERY`.
    pub fn new(ctx: &GpuContext) -> Result<Self> {
        let queries = if ctx.device().features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            Some(ctx.scoped("creating timestamp queries", || {
                let set = ctx.device().create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("wgpu-optim bench"),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2,
                });
                let buffer = |usage| {
                    ctx.device().create_buffer(&wgpu::BufferDescriptor {
                        label: Some("wgpu-optim timestamps"),
                        size: 16,
                        usage,
                        mapped_at_creation: false,
                    })
                };
                let resolve = buffer(wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC);
                let read = buffer(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
                (set, resolve, read)
            })?)
        } else {
            None
        };
        Ok(GpuClock { queries, nanoseconds_per_tick: f64::from(ctx.queue().get_timestamp_period()) })
    }

    /// Which clock this is.
    pub fn clock(&self) -> Clock {
        if self.queries.is_some() { Clock::Timestamps } else { Clock::WallClock }
    }

    /// Seconds the GPU spends on what `record` puts into one encoder (submitted and waited for).
    pub fn time(&self, ctx: &GpuContext, record: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<()>) -> Result<f64> {
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        let Some((set, resolve, read)) = &self.queries else {
            record(&mut encoder)?;
            return timed(|| {
                ctx.scoped("submitting timed work", || ctx.queue().submit([encoder.finish()]))?;
                Ok(ctx.wait()?)
            });
        };
        // Empty passes that only write the timestamps: the end one is written once all
        // earlier work of the submit has finished.
        let mark = |encoder: &mut wgpu::CommandEncoder, index: u32| {
            let writes = wgpu::ComputePassTimestampWrites {
                query_set: set,
                beginning_of_pass_write_index: (index == 0).then_some(0),
                end_of_pass_write_index: (index == 1).then_some(1),
            };
            encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("wgpu-optim timestamp"),
                timestamp_writes: Some(writes),
            });
        };
        mark(&mut encoder, 0);
        record(&mut encoder)?;
        mark(&mut encoder, 1);
        encoder.resolve_query_set(set, 0..2, resolve, 0);
        encoder.copy_buffer_to_buffer(resolve, 0, read, 0, 16);
        ctx.scoped("submitting timed work", || ctx.queue().submit([encoder.finish()]))?;
        let ticks: [u64; 2] =
            wgpu_optim::tensor::read_mapped(ctx, read, |bytes| bytemuck::pod_read_unaligned(&bytes[..16]))?;
        Ok(ticks[1].saturating_sub(ticks[0]) as f64 * self.nanoseconds_per_tick * 1e-9)
    }
}

/// Where a set's tensors live on the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Slices of one arena, stepped as one tensor: one dispatch per 512 MiB buffer per step.
    Arena,
    /// A buffer per tensor: one dispatch per tensor per step.
    Buffers,
}

/// One optimizer over a tensor set, with deterministic inputs shared by both sides.
pub struct Workload {
    /// The tensors.
    pub set: TensorSet,
    /// The optimizer and its configuration (its state in the mode's format).
    pub optimizer: Box<dyn Optimizer>,
    /// How the tensors are stored.
    pub mode: &'static Mode,
    params: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
}

/// A workload on the GPU: its tensors and the parameter groups (one group) that step them.
pub struct GpuWorkload {
    groups: ParamGroups,
    /// Each tensor's parameters (views of the arena, or buffers of their own).
    params: Vec<GpuTensor>,
    /// Where each tensor starts in the optimizer's state.
    starts: Vec<usize>,
}

impl Workload {
    /// Inputs for every tensor of `set` (parameters in [-2, 2), gradients in [-1, 1)), all
    /// f32.
    pub fn new(optimizer: Box<dyn Optimizer>, set: TensorSet) -> Self {
        Self::build(optimizer, set, &MODES[0])
    }

    /// The same in `mode`: parameters and gradients in its format (the inputs rounded to
    /// it), the state in its format, the parameters stored its way. `Err` where the optimizer
    /// keeps f32 state only.
    pub fn in_mode(optimizer: &dyn Optimizer, set: TensorSet, mode: &'static Mode) -> Result<Self> {
        Ok(Self::build(mode.optimizer(optimizer)?, set, mode))
    }

    fn build(optimizer: Box<dyn Optimizer>, set: TensorSet, mode: &'static Mode) -> Self {
        let (p, g) = inputs(set.total());
        let split = |all: Vec<f32>| {
            let mut at = 0;
            set.lens
                .iter()
                .map(|&n| {
                    at += n;
                    all[at - n..at].to_vec()
                })
                .collect()
        };
        let round = |v: Vec<f32>| v.into_iter().map(|x| mode.params.round(x)).collect();
        let (params, grads) = (split(round(p)), split(round(g)));
        Workload { set, optimizer, mode, params, grads }
    }

    /// Bytes one GPU step moves.
    pub fn bytes_per_step(&self) -> u64 {
        self.mode.gpu_bytes(&*self.optimizer, &self.set.lens)
    }

    /// Bytes one CPU step moves (the CPU keeps f32 values of every format).
    pub fn cpu_bytes_per_step(&self) -> u64 {
        self.mode.cpu_bytes(&*self.optimizer, &self.set.lens)
    }

    /// GPU memory the workload takes: parameters, gradients, state and master weights.
    pub fn gpu_bytes(&self) -> u64 {
        self.mode.gpu_memory(&*self.optimizer, &self.set.lens)
    }

    /// The workload on the GPU, in `storage`, gradients resident.
    pub fn gpu(&self, ctx: &GpuContext, storage: Storage) -> Result<GpuWorkload> {
        let lens = &self.set.lens;
        // Where each tensor starts in the optimizer's state: end to end over separate
        // buffers; at its place in the arena, which the optimizer updates whole.
        let starts: Vec<usize> = match storage {
            Storage::Buffers => lens.iter().scan(0, |at, &n| Some(std::mem::replace(at, *at + n))).collect(),
            Storage::Arena => GpuTensor::arena_starts_of(ctx, self.mode.params, lens),
        };
        let format = self.mode.params;
        let (params, stepped) = match storage {
            Storage::Buffers => {
                let upload = |all: &[Vec<f32>]| {
                    all.iter().map(|x| GpuTensor::from_f32s_as(ctx, format, x)).collect::<wgpu_optim::Result<Vec<_>>>()
                };
                let (params, grads) = (upload(&self.params)?, upload(&self.grads)?);
                (params.clone(), (params, grads))
            }
            Storage::Arena => {
                let (p, views) = GpuTensor::arena_of(ctx, format, lens)?;
                let (g, grad_views) = GpuTensor::arena_of(ctx, format, lens)?;
                for ((v, gv), (hp, hg)) in views.iter().zip(&grad_views).zip(self.params.iter().zip(&self.grads)) {
                    v.write(ctx, hp)?;
                    gv.write(ctx, hg)?;
                }
                // An element-wise step can update the arena whole (gaps included); a staged one
                // reduces per tensor, so it steps the views.
                if self.optimizer.kernel().is_staged() {
                    (views.clone(), (views, grad_views))
                } else {
                    (views, (vec![p], vec![g]))
                }
            }
        };
        let groups = ParamGroups::new(
            ctx,
            vec![ParamGroup {
                optimizer: self.optimizer.clone_box(),
                params: stepped.0.iter().collect(),
                grads: stepped.1.iter().collect(),
                shapes: Vec::new(),
                precision: self.mode.precision,
            }],
        )?;
        Ok(GpuWorkload { groups, params, starts })
    }

    /// The workload on the CPU, one optimizer per tensor.
    pub fn cpu(&self, threads: Threads) -> Result<Vec<CpuOptimizer>> {
        self.params
            .iter()
            .map(|p| {
                let cpu = CpuOptimizer::new(self.optimizer.clone_box(), p)?.with_format(self.mode.params)?;
                Ok(cpu.with_precision(self.mode.precision)?.with_threads(threads))
            })
            .collect()
    }

    /// Steps on the CPU over every tensor as one side of an interleaved measurement
    /// (seconds per step), after one untimed step: one thread, or the rayon pool across
    /// tensors and within each (work stealing balances a large embedding against many small
    /// tensors). `cpu` is [`cpu`](Self::cpu)`(threads)`.
    pub fn cpu_steps<'a>(
        &'a self,
        cpu: &'a mut [CpuOptimizer],
        threads: Threads,
    ) -> Result<Timed<impl FnMut() -> Result<f64> + 'a>> {
        let grads = &self.grads;
        let mut run = move || {
            timed(|| {
                match threads {
                    Threads::Sequential => cpu.iter_mut().zip(grads).try_for_each(|(c, g)| c.step(g))?,
                    Threads::Parallel => cpu.par_iter_mut().zip(grads).try_for_each(|(c, g)| c.step(g))?,
                }
                Ok(())
            })
        };
        run()?;
        Ok(Timed { run, units: 1 })
    }

    /// Checks the GPU against the CPU: `steps` steps on each side from the same inputs, every
    /// parameter and state element within the optimizer's per-step error budget times the
    /// steps (in ε·(|x| + largest change)), plus a unit of a 16-bit format per step for a
    /// tensor stored in one (a value within rounding of a tie may round either way on two
    /// sides whose f32 arithmetic differs). Returns the worst error, or
    /// [`Error::ResultMismatch`]: no speed is reported for a wrong result.
    pub fn check(&self, ctx: &GpuContext, gpu: &mut GpuWorkload, steps: u32) -> Result<f64> {
        let mut cpu = self.cpu(Threads::Parallel)?;
        let before: Vec<Vec<Vec<f32>>> = cpu.iter().map(snapshot).collect();
        gpu.groups.run(steps)?;
        for _ in 0..steps {
            for (c, g) in cpu.iter_mut().zip(&self.grads) {
                c.step(g)?;
            }
        }
        let budget = f64::from(self.optimizer.kernel().step_error_budget) * f64::from(steps);
        let (param_unit, state_unit) = self.mode.units();
        let in_units = |unit: f64| budget + f64::from(steps) * unit / f64::from(f32::EPSILON);
        let gpu_state: Vec<(&str, Vec<f32>)> = gpu.groups.groups()[0]
            .state()
            .map(|(slot, _)| Ok((slot.torch_name, gpu.groups.groups()[0].read_state(slot.torch_name)?.to_vec())))
            .collect::<Result<_>>()?;
        let mut worst = 0.0f64;
        for (t, (c, old)) in cpu.iter().zip(&before).enumerate() {
            let want = snapshot(c);
            let (at, n) = (gpu.starts[t], self.set.lens[t]);
            let mut got = vec![gpu.params[t].read(ctx)?];
            got.extend(gpu_state.iter().map(|(_, s)| s[at..at + n].to_vec()));
            for (j, ((g, w), o)) in got.iter().zip(&want).zip(old).enumerate() {
                // Scale: |x| plus its whole change over the steps, which bounds each step's.
                let (i, err) = worst_error(g, w, max_change(o, w));
                worst = worst.max(err);
                let master = j > 0 && gpu_state[j - 1].0 == "master_param";
                let budget = match j {
                    0 => in_units(param_unit),
                    _ if master => budget,
                    _ => in_units(state_unit),
                };
                if err.is_nan() || err > budget {
                    let what = if j == 0 { "params" } else { gpu_state[j - 1].0 };
                    return Err(Error::ResultMismatch(format!(
                        "{} on {}: tensor {t} {what}[{i}] is {:e} on the GPU and {:e} on the CPU after {steps} \
                         steps ({err:.1} ε·scale, budget {budget}); no speed is reported for a wrong result",
                        self.optimizer.name(),
                        self.set.name,
                        g[i],
                        w[i]
                    )));
                }
            }
        }
        Ok(worst)
    }
}

/// Parameters and every state tensor of a CPU optimizer.
fn snapshot(c: &CpuOptimizer) -> Vec<Vec<f32>> {
    std::iter::once(c.params().to_vec()).chain(c.state().map(|(_, t)| t.to_vec())).collect()
}

impl GpuWorkload {
    /// Each tensor's parameters on the GPU.
    pub fn params(&self) -> &[GpuTensor] {
        &self.params
    }

    /// Steps as one side of an interleaved measurement (seconds per step), after one untimed
    /// submit (first-use costs: pipelines, memory residency): `steps_per_submit` steps
    /// recorded into one encoder per sample, timed by `clock`.
    pub fn steps<'a>(
        &'a mut self,
        ctx: &'a GpuContext,
        clock: &'a GpuClock,
        steps_per_submit: u32,
    ) -> Result<Timed<impl FnMut() -> Result<f64> + 'a>> {
        let k = steps_per_submit.clamp(1, SCALAR_SLOTS / 2);
        let groups = &mut self.groups;
        let mut run = move || clock.time(ctx, |encoder| Ok(groups.record(encoder, k)?));
        run()?;
        Ok(Timed { run, units: k })
    }
}

/// Bytes of parameters, gradients, state and master weights of `o` over `set` in `mode` on
/// the GPU — and about as large in the host arrays of the CPU side (f32 there): known before
/// anything is allocated.
pub fn state_bytes(o: &dyn Optimizer, set: &TensorSet, mode: &Mode) -> u64 {
    let f32_host = Mode { params: wgpu_optim::ElementFormat::F32, state: wgpu_optim::ElementFormat::F32, ..*mode };
    mode.gpu_memory(o, &set.lens).max(f32_host.gpu_memory(o, &set.lens))
}
