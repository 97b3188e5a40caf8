//! Rows-only steps (SparseAdam, plain SGD: [`RowRule`]) over a table (rows × dim, row-major):
//! on the CPU (the reference) and on the GPU (shaders/sparse_adam.wgsl), each step given the
//! touched rows' indices and values.

use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::optim::sparse_adam::{RowRule, SparseScalars, check_rows, coalesce, update};
use crate::tensor::GpuTensor;

/// The table's shape, checked: `rows × dim` elements, neither zero.
fn table(what: &'static str, len: usize, rows: usize, dim: usize) -> Result<()> {
    crate::optim::check_shape(what, &[rows, dim], len)
}

/// A rows-only step on the CPU: the reference the GPU is checked against.
#[derive(Clone, Debug)]
pub struct CpuRows {
    config: RowRule,
    dim: usize,
    params: Vec<f32>,
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
    step: u64,
}

impl CpuRows {
    /// A table of `rows × dim` parameters (row-major), its moments zero.
    pub fn new(rule: impl Into<RowRule>, params: &[f32], rows: usize, dim: usize) -> Result<Self> {
        let config = rule.into();
        config.validate()?;
        table("params (rows × dim)", params.len(), rows, dim)?;
        let n = if config.has_moments() { params.len() } else { 0 };
        Ok(CpuRows { config, dim, params: params.to_vec(), exp_avg: vec![0.0; n], exp_avg_sq: vec![0.0; n], step: 0 })
    }

    /// One step with the gradient rows `values` (`indices.len()` rows of `dim`) at rows
    /// `indices` (duplicates summed); an empty gradient counts a step and changes nothing
    /// else, as torch's.
    pub fn step(&mut self, indices: &[u32], values: &[f32]) -> Result<()> {
        check_rows(indices, values, self.params.len() / self.dim, self.dim)?;
        self.step += 1;
        let s = self.config.scalars(self.step);
        if !self.config.has_moments() {
            // torch's SGD adds a sparse gradient entry by entry (it does not coalesce), each
            // a fused multiply-add: the same here, in the entries' order.
            for (k, &r) in indices.iter().enumerate() {
                let row = &mut self.params[r as usize * self.dim..(r as usize + 1) * self.dim];
                for (p, &g) in row.iter_mut().zip(&values[k * self.dim..(k + 1) * self.dim]) {
                    let g = if s.maximize == 1 { -g } else { g };
                    *p = g.mul_add(s.neg_step_size, *p);
                }
            }
            return Ok(());
        }
        for (r, g) in coalesce(indices, values, self.dim) {
            let at = r as usize * self.dim;
            for (d, &g) in g.iter().enumerate() {
                let e = at + d;
                update(&s, &mut self.params[e], &mut self.exp_avg[e], &mut self.exp_avg_sq[e], g);
            }
        }
        Ok(())
    }

    /// The parameters.
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// A state tensor by torch's name (`exp_avg`, `exp_avg_sq`: SparseAdam's).
    pub fn state_tensor(&self, name: &str) -> Option<&[f32]> {
        match name {
            "exp_avg" if self.config.has_moments() => Some(&self.exp_avg),
            "exp_avg_sq" if self.config.has_moments() => Some(&self.exp_avg_sq),
            _ => None,
        }
    }

    /// Steps taken (torch's `state["step"]`).
    pub fn step_count(&self) -> u64 {
        self.step
    }
}

/// A rows-only step on the GPU: the table (and SparseAdam's moments) in GPU buffers, one
/// dispatch per step.
pub struct GpuRows {
    ctx: GpuContext,
    config: RowRule,
    rows: usize,
    dim: usize,
    params: GpuTensor,
    exp_avg: GpuTensor,
    exp_avg_sq: GpuTensor,
    step: u64,
    pipeline: wgpu::ComputePipeline,
    /// Per step slot (`step % ROW_STEP_SLOTS`): the scalars, then the row info.
    uniforms: wgpu::Buffer,
    /// The rows of the last host step, grown as needed: indices, values.
    staged: Option<(wgpu::Buffer, GpuTensor, usize)>,
}

/// Bytes of one uniform window (the scalars, or the row info), a multiple of every device's
/// uniform offset alignment.
const UNIFORM_AT: u64 = 256;
/// Steps one submit may record: each has its own slot of scalars and row info, written to
/// the queue when recorded, so steps recorded into one encoder read their own.
pub const ROW_STEP_SLOTS: u64 = 256;

impl GpuRows {
    /// Uploads a table of `rows × dim` parameters (row-major); the moments start at zero.
    /// The table lies in one binding (`Err` names the limit otherwise).
    pub fn new(ctx: &GpuContext, rule: impl Into<RowRule>, params: &[f32], rows: usize, dim: usize) -> Result<Self> {
        let config = rule.into();
        config.validate()?;
        table("params (rows × dim)", params.len(), rows, dim)?;
        if rows > u32::MAX as usize || params.len() > u32::MAX as usize {
            return Err(Error::OverLimit(format!("a SparseAdam table of {rows} × {dim} exceeds u32 indexing")));
        }
        let p = GpuTensor::from_slice(ctx, params)?;
        if p.segments().len() != 1 {
            return Err(Error::OverLimit(format!(
                "a SparseAdam table of {} bytes exceeds one bound sub-range ({} bytes): raise Tuning::segment_bytes",
                params.len() * 4,
                ctx.tuning().segment_bytes
            )));
        }
        // SGD keeps no moments: one-element placeholders its kernel never touches.
        let n = if config.has_moments() { params.len() } else { 1 };
        let exp_avg = GpuTensor::zeros(ctx, n)?;
        let exp_avg_sq = GpuTensor::zeros(ctx, n)?;
        let (pipeline, uniforms) = ctx.scoped("creating SparseAdam's kernel", || {
            let module = ctx.device().create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("wgpu-optim sparse_adam"),
                source: wgpu::ShaderSource::Wgsl(include_str!("../shaders/sparse_adam.wgsl").into()),
            });
            let pipeline = ctx.device().create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some("wgpu-optim sparse_adam"),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
            let uniforms = ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-optim sparse_adam uniforms"),
                size: 2 * UNIFORM_AT * ROW_STEP_SLOTS,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            (pipeline, uniforms)
        })?;
        Ok(GpuRows {
            ctx: ctx.clone(),
            config,
            rows,
            dim,
            params: p,
            exp_avg,
            exp_avg_sq,
            step: 0,
            pipeline,
            uniforms,
            staged: None,
        })
    }

    /// Uploads the gradient rows and takes one step (submitted; does not wait). See
    /// [`CpuRows::step`].
    pub fn step(&mut self, indices: &[u32], values: &[f32]) -> Result<()> {
        check_rows(indices, values, self.rows, self.dim)?;
        let nnz = indices.len();
        let need = nnz.max(1);
        if self.staged.as_ref().is_none_or(|(_, _, cap)| *cap < need) {
            let index_buffer = self.ctx.scoped("allocating SparseAdam's rows", || {
                self.ctx.device().create_buffer(&wgpu::BufferDescriptor {
                    label: Some("wgpu-optim sparse_adam indices"),
                    size: (need as u64 * 4).next_multiple_of(16),
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })?;
            let values_len = need.checked_mul(self.dim).ok_or_else(|| Error::OverLimit("nnz × dim".into()))?;
            self.staged = Some((index_buffer, GpuTensor::zeros(&self.ctx, values_len)?, need));
        }
        let Some((index_buffer, value_tensor, _)) = &self.staged else { unreachable!("staged just above") };
        if nnz > 0 {
            self.ctx.queue().write_buffer(index_buffer, 0, bytemuck::cast_slice(indices));
            value_tensor.slice(&self.ctx, 0, values.len())?.write(&self.ctx, values)?;
        }
        let (indices_buffer, values_tensor) = (index_buffer.clone(), value_tensor.clone());
        let mut encoder = self
            .ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("wgpu-optim sparse_adam step") });
        self.record(&mut encoder, &indices_buffer, &values_tensor, nnz)?;
        self.ctx.scoped("submitting a SparseAdam step", || self.ctx.queue().submit([encoder.finish()]))?;
        Ok(())
    }

    /// Records one step into `encoder` with the gradient rows in the caller's buffers (an
    /// embedding's backward writes them): `nnz` row indices (u32) in `indices` and their
    /// values (`nnz × dim`) at the start of `values`. The step's scalars are written to the
    /// queue now, into a slot of their own: up to [`ROW_STEP_SLOTS`] steps may be recorded
    /// before a submit. The indices must lie below the table's rows (rows past it are
    /// ignored).
    pub fn record(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        indices: &wgpu::Buffer,
        values: &GpuTensor,
        nnz: usize,
    ) -> Result<()> {
        let values_len = nnz.checked_mul(self.dim).ok_or_else(|| Error::OverLimit("nnz × dim".into()))?;
        if values.len() < values_len || indices.size() < nnz as u64 * 4 || values.segments().len() != 1 {
            return Err(Error::LengthMismatch {
                what: "SparseAdam gradient rows (nnz × dim, one binding)",
                expected: values_len,
                actual: values.len(),
            });
        }
        let step = self.step + 1;
        let scalars: SparseScalars = self.config.scalars(step);
        let info = [nnz as u32, self.dim as u32, self.rows as u32, 0];
        let groups = crate::engine::grid(nnz.max(1) as u64, self.ctx.tuning().max_workgroups_per_dimension)?;
        let ctx = &self.ctx;
        ctx.scoped("recording a SparseAdam step", || {
            let slot = 2 * UNIFORM_AT * (step % ROW_STEP_SLOTS);
            ctx.queue().write_buffer(&self.uniforms, slot, bytemuck::bytes_of(&scalars));
            ctx.queue().write_buffer(&self.uniforms, slot + UNIFORM_AT, bytemuck::cast_slice(&info));
            let window = |offset| {
                wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &self.uniforms,
                    offset,
                    size: wgpu::BufferSize::new(32),
                })
            };
            let resources = [
                window(slot),
                window(slot + UNIFORM_AT),
                indices.as_entire_binding(),
                values.segments()[0].binding(),
                self.params.segments()[0].binding(),
                self.exp_avg.segments()[0].binding(),
                self.exp_avg_sq.segments()[0].binding(),
            ];
            let layout = self.pipeline.get_bind_group_layout(0);
            let group = crate::engine::bind_in_order(ctx, "wgpu-optim sparse_adam", &layout, resources.to_vec());
            if nnz > 0 {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("wgpu-optim sparse_adam"),
                    timestamp_writes: None,
                });
                pass.set_pipeline(&self.pipeline);
                pass.set_bind_group(0, &group, &[]);
                pass.dispatch_workgroups(groups.0, groups.1, 1);
            }
        })?;
        self.step = step;
        Ok(())
    }

    /// The parameters (waits for the GPU).
    pub fn read_params(&self) -> Result<Vec<f32>> {
        self.params.read(&self.ctx)
    }

    /// A state tensor by torch's name (`exp_avg`, `exp_avg_sq`: SparseAdam's), read back
    /// (waits).
    pub fn read_state(&self, name: &str) -> Result<Vec<f32>> {
        match name {
            "exp_avg" if self.config.has_moments() => self.exp_avg.read(&self.ctx),
            "exp_avg_sq" if self.config.has_moments() => self.exp_avg_sq.read(&self.ctx),
            _ => Err(Error::UnknownState {
                optimizer: "SparseAdam",
                name: name.into(),
                available: vec!["exp_avg", "exp_avg_sq"],
            }),
        }
    }

    /// The parameter tensor (the table), for the caller's own kernels.
    pub fn params(&self) -> &GpuTensor {
        &self.params
    }

    /// Steps taken.
    pub fn step_count(&self) -> u64 {
        self.step
    }
}
