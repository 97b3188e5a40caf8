//! Health checks on the GPU: NaN and ±inf counts in parameters and every state tensor, their
//! largest finite magnitude, and the largest change of a parameter in the last step, so a run
//! that starts to diverge is seen before its loss turns NaN ("monitor m and v for NaN").

use crate::engine::{UNIFORM_BYTES, grid, uniform_window};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::tensor::GpuTensor;

/// What a health check found in one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorHealth {
    /// The parameter group (0 for a lone optimizer).
    pub group: usize,
    /// `"params"`, or the state tensor's torch name (`"exp_avg"`, …).
    pub name: &'static str,
    /// Elements checked.
    pub len: usize,
    /// Elements that are NaN.
    pub nan: u64,
    /// Elements that are +inf or -inf.
    pub inf: u64,
    /// The largest finite |x|.
    pub max_abs: f32,
    /// Parameters whose updates are tracked: the largest finite |p_after - p_before| of the
    /// last step (0 for a skipped step).
    pub max_update: Option<f32>,
}

impl TensorHealth {
    /// No NaN and no infinity.
    pub fn is_finite(&self) -> bool {
        self.nan == 0 && self.inf == 0
    }

    /// The last step's largest update relative to the largest parameter,
    /// `max |Δp| / max |p|` (healthy training typically sits near 1e-3); `None` when
    /// updates are not tracked or every parameter is 0.
    pub fn update_ratio(&self) -> Option<f32> {
        self.max_update.filter(|_| self.max_abs > 0.0).map(|u| u / self.max_abs)
    }
}

/// One tensor to check: its group, its name, the values, and their copy from before the
/// step when updates are tracked.
pub(crate) type Checked<'a> = (usize, &'static str, &'a GpuTensor, Option<&'a GpuTensor>);

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Info {
    len: u32,
    slot: u32,
    diff: u32,
}

/// Elements one workgroup of shaders/monitor.wgsl checks.
const PER_WORKGROUP: u64 = 256 * 16;

/// The health check over a fixed set of tensors: bind groups and slots built once, then
/// each check is one clear, one compute pass and a read of 16 bytes per sub-range.
pub(crate) struct HealthCheck {
    out: wgpu::Buffer,
    slots: u32,
    stride: u32,
    group0: wgpu::BindGroup,
    dispatches: Vec<(wgpu::BindGroup, (u32, u32))>,
    /// Per tensor: group, name, length, its slots, whether its change is measured.
    tensors: Vec<(usize, &'static str, usize, std::ops::Range<usize>, bool)>,
    pipeline: wgpu::ComputePipeline,
}

impl HealthCheck {
    pub fn new(ctx: &GpuContext, tensors: &[Checked<'_>]) -> Result<Self> {
        // shaders/monitor.wgsl classifies f32 bit patterns.
        for (_, name, t, _) in tensors {
            t.format().require(name, crate::ElementFormat::F32)?;
        }
        let engine = ctx.engine();
        let pipeline = engine.monitor_pipeline(ctx)?;
        let max_dim = ctx.tuning().max_workgroups_per_dimension;
        let stride = u64::from(ctx.limits().min_uniform_buffer_offset_alignment).max(UNIFORM_BYTES);
        let slots: usize = tensors.iter().map(|t| t.2.segments().len()).sum();
        let mut infos = Vec::with_capacity(slots);
        let mut layout = Vec::with_capacity(tensors.len());
        for &(group, name, t, before) in tensors {
            if let Some(b) = before.filter(|b| b.segment_lens() != t.segment_lens()) {
                return Err(Error::LayoutMismatch {
                    what: "values before the step",
                    expected: t.segment_lens(),
                    actual: b.segment_lens(),
                });
            }
            let first = infos.len();
            for s in t.segments() {
                infos.push(Info { len: s.len as u32, slot: infos.len() as u32, diff: u32::from(before.is_some()) });
            }
            layout.push((group, name, t.len(), first..infos.len(), before.is_some()));
        }
        let grids = tensors
            .iter()
            .flat_map(|t| t.2.segments().iter().map(move |s| grid((s.len as u64).div_ceil(PER_WORKGROUP), max_dim)))
            .collect::<Result<Vec<_>>>()?;
        let (out, group0, groups) = ctx.scoped("creating the health check", || {
            let out = ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-optim health"),
                size: 16 * slots as u64,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let info = ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-optim health info"),
                size: stride * slots as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            for (i, x) in infos.iter().enumerate() {
                ctx.queue().write_buffer(&info, stride * i as u64, bytemuck::bytes_of(x));
            }
            let group0 = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("wgpu-optim health"),
                layout: &engine.monitor_layouts[0],
                entries: &[
                    wgpu::BindGroupEntry { binding: 0, resource: out.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 1, resource: uniform_window(&info, 0) },
                ],
            });
            let groups: Vec<_> = tensors
                .iter()
                .flat_map(|&(_, _, t, before)| {
                    let before = before.unwrap_or(t);
                    t.segments().iter().zip(before.segments()).map(|(s, b)| {
                        ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
                            label: Some("wgpu-optim health tensor"),
                            layout: &engine.monitor_layouts[1],
                            entries: &[
                                wgpu::BindGroupEntry { binding: 0, resource: s.binding() },
                                wgpu::BindGroupEntry { binding: 1, resource: b.binding() },
                            ],
                        })
                    })
                })
                .collect();
            (out, group0, groups)
        })?;
        Ok(HealthCheck {
            out,
            slots: slots as u32,
            stride: stride as u32,
            group0,
            dispatches: groups.into_iter().zip(grids).collect(),
            tensors: layout,
            pipeline,
        })
    }

    /// Records the check: the results buffer holds this moment's counts afterwards.
    pub fn record(&self, encoder: &mut wgpu::CommandEncoder) {
        encoder.clear_buffer(&self.out, 0, None);
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("wgpu-optim health"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&self.pipeline);
        for (i, (group, (x, y))) in self.dispatches.iter().enumerate() {
            pass.set_bind_group(0, &self.group0, &[self.stride * i as u32]);
            pass.set_bind_group(1, group, &[]);
            pass.dispatch_workgroups(*x, *y, 1);
        }
    }

    /// Runs the check now, after everything submitted before, and reads the results.
    pub fn run(&self, ctx: &GpuContext) -> Result<Vec<TensorHealth>> {
        ctx.scoped("checking tensor health", || {
            let mut encoder = ctx
                .device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("wgpu-optim health") });
            self.record(&mut encoder);
            ctx.queue().submit([encoder.finish()]);
        })?;
        let words: Vec<u32> = GpuTensor::from_buffer(ctx, &self.out, 0, 4 * self.slots as usize)?
            .read(ctx)?
            .into_iter()
            .map(f32::to_bits)
            .collect();
        Ok(self
            .tensors
            .iter()
            .map(|(group, name, len, slots, diff)| {
                let slot = |s: usize| &words[4 * s..4 * s + 4];
                let max = |k: usize| slots.clone().map(|s| f32::from_bits(slot(s)[k])).fold(0.0f32, f32::max);
                TensorHealth {
                    group: *group,
                    name,
                    len: *len,
                    nan: slots.clone().map(|s| u64::from(slot(s)[0])).sum(),
                    inf: slots.clone().map(|s| u64::from(slot(s)[1])).sum(),
                    max_abs: max(2),
                    max_update: diff.then(|| max(3)),
                }
            })
            .collect())
    }
}

/// The copy of `params` that update tracking needs; `params` must allow copying from.
pub(crate) fn tracking_copy(ctx: &GpuContext, params: &GpuTensor) -> Result<GpuTensor> {
    if params.segments().iter().any(|s| !s.buffer.usage().contains(wgpu::BufferUsages::COPY_SRC)) {
        return Err(Error::MissingUsage {
            what: "parameters tracked for updates",
            missing: wgpu::BufferUsages::COPY_SRC,
        });
    }
    GpuTensor::zeros_like(ctx, params.format(), params)
}
