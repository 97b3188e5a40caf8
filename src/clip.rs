//! Fused gradient control: global-norm clipping (torch.nn.utils.clip_grad_norm_), loss-scale
//! unscaling and skip-on-inf (torch.amp.GradScaler), as one GPU reduction per step whose
//! result the step kernels read. Gradients are never rewritten by an extra pass.

use crate::engine::{UNIFORM_BYTES, grid, uniform_window};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::tensor::GpuTensor;

/// Which norm [`GradControl`] measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NormType {
    /// The 2-norm (torch's `norm_type=2.0`).
    #[default]
    Two,
    /// The largest |g| (`norm_type=inf`).
    Inf,
}

/// What happens to the gradients inside a step.
///
/// Each step, before the update, the GPU computes the total norm of all gradients of all
/// groups (after unscaling) and whether any is NaN or ±inf. A non-finite gradient skips the
/// whole step: parameters, every state tensor and the step counter stay bit-identical (as
/// GradScaler does; torch's clip_grad_norm_ alone would write NaNs). Otherwise each update
/// reads `(g / loss_scale) * min(max_norm / (norm + 1e-6), 1)`, torch's two roundings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradControl {
    /// Clip the total norm to this (torch's `max_norm`); `None`: no clipping.
    pub max_norm: Option<f32>,
    /// The norm clipped (default the 2-norm).
    pub norm_type: NormType,
    /// The loss scale the gradients carry (1 without mixed precision); with `scaler`, the
    /// initial scale (torch's `init_scale`, 2^16).
    pub loss_scale: f32,
    /// Adjust the loss scale on the GPU after every step, as torch.amp.GradScaler.update.
    pub scaler: Option<ScalerGrowth>,
}

/// torch.amp.GradScaler's scale update: after a step with a non-finite gradient the scale
/// is multiplied by `backoff_factor`; after `growth_interval` finite steps in a row, by
/// `growth_factor` (unless that overflows).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScalerGrowth {
    /// Default 2.0 (must be > 1).
    pub growth_factor: f32,
    /// Default 0.5 (must be < 1).
    pub backoff_factor: f32,
    /// Default 2000.
    pub growth_interval: u32,
}

impl Default for ScalerGrowth {
    fn default() -> Self {
        ScalerGrowth { growth_factor: 2.0, backoff_factor: 0.5, growth_interval: 2000 }
    }
}

impl GradControl {
    /// Checks the loss scale, the clipping norm and the scaler's factors.
    pub fn validate(&self) -> Result<()> {
        if !(self.loss_scale.is_finite() && self.loss_scale > 0.0) {
            return Err(Error::InvalidHyperParameter {
                optimizer: "GradControl",
                message: format!("loss_scale must be positive and finite, got {}", self.loss_scale),
            });
        }
        if let Some(s) =
            self.scaler.filter(|s| !(s.growth_factor > 1.0 && s.backoff_factor < 1.0 && s.backoff_factor > 0.0))
        {
            return Err(Error::InvalidHyperParameter {
                optimizer: "GradScaler",
                message: format!(
                    "The growth factor must be > 1.0 and the backoff factor in (0, 1); got {} and {}",
                    s.growth_factor, s.backoff_factor
                ),
            });
        }
        if let Some(m) = self.max_norm.filter(|m| m.is_nan() || *m <= 0.0) {
            return Err(Error::InvalidHyperParameter {
                optimizer: "GradControl",
                message: format!("max_norm must be positive, got {m}"),
            });
        }
        Ok(())
    }
}

impl GradControl {
    /// F(1 / loss_scale), computed in f64 and rounded once: the unscaling factor while the
    /// scale is fixed (GPU and CPU alike).
    fn fixed_inv_scale(&self) -> f32 {
        (1.0 / f64::from(self.loss_scale)) as f32
    }
}

impl Default for GradControl {
    fn default() -> Self {
        GradControl { max_norm: None, norm_type: NormType::Two, loss_scale: 1.0, scaler: None }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Info {
    first_chunk: u32,
    len: u32,
    total_chunks: u32,
    norm_inf: u32,
    clip: u32,
    max_norm: f32,
    inv_scale: f32,
    dynamic: u32,
    growth_factor: f32,
    backoff_factor: f32,
    growth_interval: u32,
}

const CHUNK: usize = 1024;

/// The reduction over every gradient sub-range of a step, and the control buffer it fills.
pub(crate) struct NormReducer {
    pub control: wgpu::Buffer,
    /// [loss scale, growth tracker] on the GPU.
    pub scaler: wgpu::Buffer,
    _partials: wgpu::Buffer,
    info: wgpu::Buffer,
    stride: u32,
    group0: wgpu::BindGroup,
    grad_groups: Vec<wgpu::BindGroup>,
    chunks: Vec<u32>,
    partial_sums: wgpu::ComputePipeline,
    finalize: wgpu::ComputePipeline,
    update_scale: wgpu::ComputePipeline,
    /// Each sub-range's grid of one workgroup per chunk, planned at construction.
    grids: Vec<(u32, u32)>,
}

impl NormReducer {
    pub fn new(ctx: &GpuContext, grads: &GpuTensor, control: GradControl) -> Result<Self> {
        control.validate()?;
        // shaders/grad_norm.wgsl sums f32 squares.
        grads.format().require("the gradients of a gradient control", crate::ElementFormat::F32)?;
        let engine = ctx.engine();
        let (partial_sums, finalize) =
            (engine.norm_pipeline(ctx, "partial_sums")?, engine.norm_pipeline(ctx, "finalize")?);
        let update_scale = engine.norm_pipeline(ctx, "update_scale")?;
        let chunks: Vec<u32> = grads.segments().iter().map(|s| s.len.div_ceil(CHUNK) as u32).collect();
        let total: u32 = chunks.iter().sum();
        let max_dim = ctx.tuning().max_workgroups_per_dimension;
        let grids = chunks.iter().map(|&c| grid(u64::from(c.max(1)), max_dim)).collect::<Result<Vec<_>>>()?;
        let stride = u64::from(ctx.limits().min_uniform_buffer_offset_alignment).max(UNIFORM_BYTES);
        let storage = |label, bytes: u64| {
            ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes.next_multiple_of(16),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        let (control_buf, scaler, partials, info, group0, grad_groups) =
            ctx.scoped("creating the gradient control", || {
                let control_buf = ctx.device().create_buffer(&wgpu::BufferDescriptor {
                    label: Some("wgpu-optim gradient control"),
                    size: crate::engine::CONTROL_BYTES,
                    usage: crate::engine::CONTROL_USAGES,
                    mapped_at_creation: false,
                });
                ctx.queue().write_buffer(&control_buf, 0, bytemuck::cast_slice(&[1.0f32, 1.0, 0.0, 0.0]));
                let partials = storage("wgpu-optim gradient norm partials", 8 * u64::from(total));
                let scaler = storage("wgpu-optim loss scale", 16);
                let info = ctx.device().create_buffer(&wgpu::BufferDescriptor {
                    label: Some("wgpu-optim gradient norm info"),
                    size: stride * chunks.len() as u64,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                let group0 = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("wgpu-optim gradient norm"),
                    layout: &engine.norm_layouts[0],
                    entries: &[
                        wgpu::BindGroupEntry { binding: 0, resource: control_buf.as_entire_binding() },
                        wgpu::BindGroupEntry { binding: 1, resource: partials.as_entire_binding() },
                        wgpu::BindGroupEntry { binding: 2, resource: uniform_window(&info, 0) },
                        wgpu::BindGroupEntry { binding: 3, resource: scaler.as_entire_binding() },
                    ],
                });
                let grad_groups = grads
                    .segments()
                    .iter()
                    .map(|s| {
                        ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
                            label: Some("wgpu-optim gradient norm gradient"),
                            layout: &engine.norm_layouts[1],
                            entries: &[wgpu::BindGroupEntry { binding: 0, resource: s.binding() }],
                        })
                    })
                    .collect::<Vec<_>>();
                (control_buf, scaler, partials, info, group0, grad_groups)
            })?;
        let reducer = NormReducer {
            control: control_buf,
            scaler,
            update_scale,
            _partials: partials,
            info,
            stride: stride as u32,
            group0,
            grad_groups,
            chunks,
            partial_sums,
            finalize,
            grids,
        };
        reducer.configure(ctx, grads, control)?;
        Ok(reducer)
    }

    /// Writes the per-sub-range info for `control` (a new loss scale, say).
    pub fn configure(&self, ctx: &GpuContext, grads: &GpuTensor, control: GradControl) -> Result<()> {
        let total: u32 = self.chunks.iter().sum();
        let mut first = 0;
        let growth = control.scaler.unwrap_or_default();
        ctx.scoped("configuring the gradient control", || {
            // The scale starts (again) at `loss_scale`, its growth tracker at 0.
            ctx.queue().write_buffer(&self.scaler, 0, bytemuck::cast_slice(&[control.loss_scale, 0.0, 0.0, 0.0]));
            for (i, (s, &c)) in grads.segments().iter().zip(&self.chunks).enumerate() {
                let info = Info {
                    first_chunk: first,
                    len: s.len as u32,
                    total_chunks: total,
                    norm_inf: u32::from(control.norm_type == NormType::Inf),
                    clip: u32::from(control.max_norm.is_some()),
                    max_norm: control.max_norm.unwrap_or(f32::INFINITY),
                    inv_scale: control.fixed_inv_scale(),
                    dynamic: u32::from(control.scaler.is_some()),
                    growth_factor: growth.growth_factor,
                    backoff_factor: growth.backoff_factor,
                    growth_interval: growth.growth_interval,
                };
                ctx.queue().write_buffer(&self.info, u64::from(self.stride) * i as u64, bytemuck::bytes_of(&info));
                first += c;
            }
        })
    }

    /// Records the reduction: the control buffer holds this step's values afterwards.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.partial_sums);
        for (i, (group, &(x, y))) in self.grad_groups.iter().zip(&self.grids).enumerate() {
            pass.set_bind_group(0, &self.group0, &[self.stride * i as u32]);
            pass.set_bind_group(1, group, &[]);
            pass.dispatch_workgroups(x, y, 1);
        }
        pass.set_pipeline(&self.finalize);
        pass.set_bind_group(0, &self.group0, &[0]);
        pass.set_bind_group(1, &self.grad_groups[0], &[]);
        pass.dispatch_workgroups(1, 1, 1);
    }

    /// Records GradScaler's scale update, after the step's kernels.
    pub fn record_after(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.update_scale);
        pass.set_bind_group(0, &self.group0, &[0]);
        pass.set_bind_group(1, &self.grad_groups[0], &[]);
        pass.dispatch_workgroups(1, 1, 1);
    }
}

/// The CPU twin of `shaders/grad_norm.wgsl`: the same two-level reduction in the same order
/// (256 lanes over each 1024-element chunk, a tree over the lanes, then the same over the
/// chunks), so a CPU optimizer's norm, coefficient and skip decision are the GPU's bits
/// wherever the GPU rounds as IEEE does (lavapipe does).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct CpuGradControl {
    pub control: GradControl,
    /// The loss scale and its growth tracker (as floats, as the GPU keeps them).
    pub scaler: [f32; 2],
    /// The last step's `[1 / loss scale, clip coefficient, found_inf, total norm]`.
    pub last: [f32; 4],
}

/// Lanes of the reduction: the shader's workgroup size.
const LANES: usize = 256;

impl CpuGradControl {
    pub fn new(control: GradControl) -> Result<Self> {
        control.validate()?;
        Ok(CpuGradControl { control, scaler: [control.loss_scale, 0.0], last: [1.0, 1.0, 0.0, 0.0] })
    }

    /// 1 / loss scale for this step.
    fn inv_scale(&self) -> f32 {
        if self.control.scaler.is_some() { 1.0 / self.scaler[0] } else { self.control.fixed_inv_scale() }
    }

    /// Computes this step's control from `grads` (the shader's `partial_sums` and
    /// `finalize`), keeps it as [`last`](Self::last) and returns it.
    pub fn reduce(&mut self, grads: &[f32]) -> [f32; 4] {
        let inf_norm = self.control.norm_type == NormType::Inf;
        let inv = self.inv_scale();
        let combine = |a: [f32; 2], b: [f32; 2]| [if inf_norm { a[0].max(b[0]) } else { a[0] + b[0] }, a[1].max(b[1])];
        let partials: Vec<[f32; 2]> = grads
            .chunks(CHUNK)
            .map(|chunk| {
                let mut lanes = [[0.0f32; 2]; LANES];
                for part in chunk.chunks(LANES) {
                    for (lane, &raw) in lanes.iter_mut().zip(part) {
                        if !raw.is_finite() {
                            lane[1] = 1.0;
                        }
                        let x = raw * inv;
                        lane[0] = if inf_norm { lane[0].max(x.abs()) } else { x.mul_add(x, lane[0]) };
                    }
                }
                tree(lanes, combine)
            })
            .collect();
        let mut lanes = [[0.0f32; 2]; LANES];
        for (c, &x) in partials.iter().enumerate() {
            let lane = &mut lanes[c % LANES];
            *lane = combine(*lane, x);
        }
        let [total, found] = tree(lanes, combine);
        let norm = if inf_norm { total } else { total.sqrt() };
        let coef = match self.control.max_norm {
            Some(max_norm) => ((1.0 / (norm + 1e-6)) * max_norm).min(1.0),
            None => 1.0,
        };
        self.last = [inv, coef, found, norm];
        self.last
    }

    /// torch.amp.GradScaler.update after the step (the shader's `update_scale`).
    pub fn update_scale(&mut self) {
        let Some(growth) = self.control.scaler else { return };
        let [scale, tracker] = &mut self.scaler;
        if self.last[2] != 0.0 {
            *scale *= growth.backoff_factor;
            *tracker = 0.0;
        } else {
            let next = *tracker + 1.0;
            if next as u32 == growth.growth_interval {
                let grown = *scale * growth.growth_factor;
                if grown.is_finite() {
                    *scale = grown;
                }
                *tracker = 0.0;
            } else {
                *tracker = next;
            }
        }
    }
}

/// The shader's tree over the lanes: strides 128, 64, …, 1.
fn tree(mut lanes: [[f32; 2]; LANES], combine: impl Fn([f32; 2], [f32; 2]) -> [f32; 2]) -> [f32; 2] {
    let mut stride = LANES / 2;
    while stride > 0 {
        for l in 0..stride {
            lanes[l] = combine(lanes[l], lanes[l + stride]);
        }
        stride /= 2;
    }
    lanes[0]
}
