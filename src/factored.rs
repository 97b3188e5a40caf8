//! The GPU side of a shaped step ([`crate::step`]): reductions over the rows and columns of
//! each parameter's trailing matrix, and the norms and update after them, as the family's
//! own entry points (Adafactor's, shaders/adafactor.wgsl), all dispatched inside the step's
//! compute pass.
//!
//! Each matrix (the last two dimensions) lies inside one bound sub-range, so its rows and
//! columns are summed without crossing bindings; a tensor may span many sub-ranges.

use crate::engine::{StepTable, UNIFORM_BYTES, grid, uniform_window};
use crate::error::{Error, Result};
use crate::format::ElementFormat;
use crate::gpu::GpuContext;
use crate::optim::{Factoring, Kernel, Optimizer, flag};
use crate::tensor::GpuTensor;

/// The shader's reduction workgroup size, chunk of the global sums and column block.
const RWG: u32 = 256;
const CHUNK: usize = crate::optim::adafactor::CHUNK;
const BLOCK: usize = 64;

/// Where one sub-range sits in its tensor (`struct Segment` in the shader).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct SegmentInfo {
    first_row: u32,
    rows: u32,
    first_matrix: u32,
    matrices: u32,
    first_chunk: u32,
    chunks: u32,
    len: u32,
    first_elem: u32,
}

/// The tensor's shape and the regions of the work buffer (`struct Layout` in the shader).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Layout {
    rows_per_matrix: u32,
    cols: u32,
    matrices: u32,
    blocks: u32,
    total_chunks: u32,
    rowsq_at: u32,
    colpart_at: u32,
    psq_at: u32,
    usq_at: u32,
    row_mean_at: u32,
    out_at: u32,
    col_at: u32,
    sqrt_numel: f32,
}

const _: () = assert!(size_of::<Layout>() as u64 <= UNIFORM_BYTES && size_of::<SegmentInfo>() as u64 <= UNIFORM_BYTES);

/// A shaped family's tensor bindings (group 1), in binding order: what the shader declares
/// (checked with naga in the engine's tests).
#[cfg(test)]
pub(crate) const BINDINGS: [&str; 5] = ["p", "g", "variance", "factors", "work"];

/// The uniform structs shared with the shader, by their WGSL names, with the Rust sizes.
#[cfg(test)]
pub(crate) const UNIFORM_STRUCTS: [(&str, usize); 2] =
    [("Segment", size_of::<SegmentInfo>()), ("Layout", size_of::<Layout>())];

struct Pipelines {
    row_sums: wgpu::ComputePipeline,
    col_blocks: wgpu::ComputePipeline,
    p_sums: wgpu::ComputePipeline,
    finalize_vars: wgpu::ComputePipeline,
    finalize_alpha: wgpu::ComputePipeline,
    u_sums: wgpu::ComputePipeline,
    finalize_coef: wgpu::ComputePipeline,
    update: wgpu::ComputePipeline,
    /// The step counter's advance, after every tensor's stages (shaders/common.wgsl).
    advance: wgpu::ComputePipeline,
}

/// What a shaped step's kernels bind beside their tensors: the step table and counter, and
/// the gradient control they read.
#[derive(Clone, Copy)]
pub(crate) struct Bound<'a> {
    pub steps: &'a StepTable,
    pub control: &'a wgpu::Buffer,
}

/// Pipelines and a uniforms binding built for a new variant, not yet in place.
pub(crate) struct Rebuilt(Pipelines, [wgpu::BindGroup; 2]);

/// The grids of one sub-range's dispatches, planned (and checked against the device's
/// limits) at construction, so that recording cannot fail or cover part of a range.
#[derive(Clone, Copy)]
struct Grids {
    rows: (u32, u32),
    col_blocks: (u32, u32),
    chunks: (u32, u32),
    elements: (u32, u32),
}

/// A shaped step's buffers, bind groups and pipelines over one parameter tensor.
pub(crate) struct FactoredStep {
    shape: Factoring,
    kernel: &'static Kernel,
    /// Each sub-range's grids, and that of the per-tensor variance update.
    grids: Vec<Grids>,
    vars_grid: (u32, u32),
    pipelines: Pipelines,
    /// Sub-range windows, then the layout.
    uniforms: wgpu::Buffer,
    layout_at: u64,
    /// Group 0 at each parity of the recorded step (which counter it reads).
    uniform_groups: [wgpu::BindGroup; 2],
    tensor_groups: Vec<wgpu::BindGroup>,
    segment_stride: u32,
    /// Sums between the stages of a step, and [alpha, coef].
    _work: wgpu::Buffer,
}

fn storage_buffer(ctx: &GpuContext, label: &str, floats: usize) -> wgpu::Buffer {
    ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: (floats.max(4) as u64 * ElementFormat::F32.bytes()).next_multiple_of(16),
        usage: crate::tensor::TENSOR_USAGES,
        mapped_at_creation: false,
    })
}

/// Elements per sub-range for a tensor of `shape`: whole matrices when factored, so that no
/// row or column crosses one.
pub(crate) fn segment_len(ctx: &GpuContext, shape: &[usize]) -> Result<usize> {
    let Factoring { rows: m, cols: n, factored, .. } = Factoring::of(shape)?;
    let seg_len = ctx.tuning().segment_len();
    if !factored {
        return Ok(seg_len);
    }
    if m * n > seg_len {
        return Err(Error::OverLimit(format!(
            "one {m}×{n} matrix ({} bytes) exceeds a bound sub-range ({} bytes); raise Tuning::segment_bytes",
            m * n * 4,
            ctx.tuning().segment_bytes
        )));
    }
    Ok(seg_len / (m * n) * (m * n))
}

impl FactoredStep {
    /// The step of `optimizer` over one tensor, `params` (of `shape`) and `grads`, reading
    /// the step table and gradient control of `bound`; returns it with the state tensors of
    /// every slot of the kernel (`None` where this shape keeps none).
    pub fn new(
        ctx: &GpuContext,
        optimizer: &dyn Optimizer,
        (params, grads): (&GpuTensor, &GpuTensor),
        shape: &[usize],
        bound: Bound<'_>,
        constants: &[(&'static str, f64)],
    ) -> Result<(Self, Vec<Option<GpuTensor>>)> {
        let dims = shape;
        let shape = Factoring::of(shape)?;
        let numel = shape.numel();
        if params.len() != numel {
            return Err(Error::LengthMismatch { what: "params (shape)", expected: numel, actual: params.len() });
        }
        if numel > u32::MAX as usize {
            return Err(Error::OverLimit(format!(
                "{} indexes elements in u32; {numel} elements are too many",
                optimizer.name()
            )));
        }
        params.format().require("the parameters of a shaped step", ElementFormat::F32)?;
        let Factoring { matrices, rows: m, cols: n, factored } = shape;
        if factored && params.segments().iter().any(|s| s.len % (m * n) != 0) {
            return Err(Error::LayoutMismatch {
                what: "params (sub-ranges of whole matrices)",
                expected: crate::tensor::segment_lens(numel, segment_len(ctx, dims)?),
                actual: params.segment_lens(),
            });
        }
        let blocks = if factored { m.div_ceil(BLOCK) } else { 0 };

        let mut segments = Vec::new();
        let (mut first_elem, mut first_chunk) = (0usize, 0usize);
        for s in params.segments() {
            let chunks = s.len.div_ceil(CHUNK);
            let (first_row, rows, first_matrix, mats) = if factored {
                (first_elem / n, s.len / n, first_elem / (m * n), s.len / (m * n))
            } else {
                (0, 0, 0, 0)
            };
            segments.push(SegmentInfo {
                first_row: first_row as u32,
                rows: rows as u32,
                first_matrix: first_matrix as u32,
                matrices: mats as u32,
                first_chunk: first_chunk as u32,
                chunks: chunks as u32,
                len: s.len as u32,
                first_elem: first_elem as u32,
            });
            first_elem += s.len;
            first_chunk += chunks;
        }
        let total_chunks = first_chunk;
        let max_dim = ctx.tuning().max_workgroups_per_dimension;
        let wg = u64::from(ctx.tuning().workgroup_size);
        let mut grids = Vec::with_capacity(segments.len());
        for s in &segments {
            if s.matrices as usize * blocks > max_dim as usize {
                return Err(Error::OverLimit(format!(
                    "{} matrices of {m} rows in one sub-range need {} column blocks, more than \
                     max_workgroups_per_dimension {max_dim}; lower Tuning::segment_bytes",
                    s.matrices,
                    s.matrices as usize * blocks
                )));
            }
            let columns = (n as u64).div_ceil(u64::from(RWG));
            if factored && columns > u64::from(max_dim) {
                return Err(Error::OverLimit(format!(
                    "a matrix of {n} columns needs {columns} column workgroups, more than \
                     max_workgroups_per_dimension {max_dim}"
                )));
            }
            grids.push(Grids {
                rows: grid(u64::from(s.rows).max(1), max_dim)?,
                col_blocks: (columns as u32, s.matrices * blocks as u32),
                chunks: grid(u64::from(s.chunks).max(1), max_dim)?,
                elements: grid(u64::from(s.len).div_ceil(wg).max(1), max_dim)?,
            });
        }
        let vars_grid = grid(((matrices * (m + n)) as u64).div_ceil(u64::from(RWG)).max(1), max_dim)?;

        // The work buffer: row sums, column block sums, chunk sums of p² and U², the mean of
        // row_var per matrix, and [alpha, coef]. row_var and col_var share one buffer;
        // col_var starts at an aligned offset so that both can be viewed as tensors.
        let align = ElementFormat::F32.elements_in(u64::from(ctx.limits().min_storage_buffer_offset_alignment));
        let align = (align as usize).max(4);
        let col_at = if factored { (matrices * m).next_multiple_of(align) } else { 0 };
        let (rowsq, colpart) = if factored { (matrices * m, matrices * blocks * n) } else { (0, 0) };
        let rowsq_at = 0;
        let colpart_at = rowsq_at + rowsq;
        let psq_at = colpart_at + colpart;
        let usq_at = psq_at + total_chunks;
        let row_mean_at = usq_at + total_chunks;
        let out_at = row_mean_at + matrices;
        let work_len = out_at + 2;
        if work_len > u32::MAX as usize {
            return Err(Error::OverLimit(format!("{}'s work buffer exceeds u32 indexing", optimizer.name())));
        }
        let layout = Layout {
            rows_per_matrix: m as u32,
            cols: n as u32,
            matrices: matrices as u32,
            blocks: blocks as u32,
            total_chunks: total_chunks as u32,
            rowsq_at: rowsq_at as u32,
            colpart_at: colpart_at as u32,
            psq_at: psq_at as u32,
            usq_at: usq_at as u32,
            row_mean_at: row_mean_at as u32,
            out_at: out_at as u32,
            col_at: col_at as u32,
            sqrt_numel: (numel as f64).powf(0.5) as f32,
        };

        let kernel = optimizer.kernel();
        let pipelines = Self::compile(ctx, kernel, factored, constants)?;
        let stride = u64::from(ctx.limits().min_uniform_buffer_offset_alignment).max(UNIFORM_BYTES);
        let layout_at = stride * segments.len() as u64;
        let variance =
            if factored { None } else { Some(GpuTensor::zeros_in(ctx, ElementFormat::F32, &params.segment_lens())?) };
        let (factors, work, uniforms, placeholder) = ctx.scoped("creating a shaped step's buffers", || {
            let uniforms = ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-optim shaped step uniforms"),
                size: layout_at + stride,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            for (i, s) in segments.iter().enumerate() {
                ctx.queue().write_buffer(&uniforms, stride * i as u64, bytemuck::bytes_of(s));
            }
            ctx.queue().write_buffer(&uniforms, layout_at, bytemuck::bytes_of(&layout));
            (
                storage_buffer(ctx, "wgpu-optim row_var and col_var", col_at + matrices * n),
                storage_buffer(ctx, "wgpu-optim shaped step work", work_len),
                uniforms,
                storage_buffer(ctx, "wgpu-optim unused state", 0),
            )
        })?;
        let uniform_groups = bind_shaped_uniforms(ctx, kernel, &uniforms, layout_at, bound)?;
        let shaped_layouts = &ctx.engine().shaped(kernel)?.0;
        let tensor_groups = ctx.scoped("binding a shaped step's tensors", || {
            (0..params.segments().len())
                .map(|i| {
                    let resources = [
                        params.segments()[i].binding(),
                        grads.segments()[i].binding(),
                        match &variance {
                            Some(v) => v.segments()[i].binding(),
                            None => placeholder.as_entire_binding(),
                        },
                        factors.as_entire_binding(),
                        work.as_entire_binding(),
                    ];
                    let layout = &shaped_layouts[1];
                    crate::engine::bind_in_order(ctx, "wgpu-optim shaped step tensors", layout, resources.to_vec())
                })
                .collect::<Vec<_>>()
        })?;
        let (row_var, col_var) = if factored {
            (
                Some(GpuTensor::from_buffer(ctx, &factors, 0, matrices * m)?),
                Some(GpuTensor::from_buffer(ctx, &factors, col_at as u64 * ElementFormat::F32.bytes(), matrices * n)?),
            )
        } else {
            (None, None)
        };
        let step = FactoredStep {
            shape,
            kernel,
            grids,
            vars_grid,
            pipelines,
            uniforms,
            layout_at,
            uniform_groups,
            tensor_groups,
            segment_stride: stride as u32,
            _work: work,
        };
        Ok((step, vec![variance, row_var, col_var]))
    }

    fn compile(
        ctx: &GpuContext,
        kernel: &'static Kernel,
        factored: bool,
        constants: &[(&'static str, f64)],
    ) -> Result<Pipelines> {
        let mut constants = constants.to_vec();
        constants.push(("FACTORED", flag(factored)));
        let engine = ctx.engine();
        let compile = |entry| engine.shaped_pipeline(ctx, kernel, entry, &constants);
        Ok(Pipelines {
            row_sums: compile("row_sums")?,
            col_blocks: compile("col_blocks")?,
            p_sums: compile("p_sums")?,
            finalize_vars: compile("finalize_vars")?,
            finalize_alpha: compile("finalize_alpha")?,
            u_sums: compile("u_sums")?,
            finalize_coef: compile("finalize_coef")?,
            update: compile("update")?,
            advance: compile("advance")?,
        })
    }

    /// Rebuilds the pipelines for new override constants (a reconfiguration, or whether a
    /// gradient control is read) and the uniforms' binding for `control`. Nothing changes
    /// unless everything was built.
    pub fn rebuilt(&self, ctx: &GpuContext, constants: &[(&'static str, f64)], bound: Bound<'_>) -> Result<Rebuilt> {
        let pipelines = Self::compile(ctx, self.kernel, self.shape.factored, constants)?;
        let group = bind_shaped_uniforms(ctx, self.kernel, &self.uniforms, self.layout_at, bound)?;
        Ok(Rebuilt(pipelines, group))
    }

    /// Puts what [`rebuilt`](Self::rebuilt) made in place.
    pub fn install(&mut self, Rebuilt(pipelines, group): Rebuilt) {
        (self.pipelines, self.uniform_groups) = (pipelines, group);
    }

    /// The counter's advance, recorded once after every tensor's stages of a step.
    pub fn advance_pipeline(&self) -> &wgpu::ComputePipeline {
        &self.pipelines.advance
    }

    /// Records this tensor's stages of one step, over the grids planned in `new`.
    pub fn record_stages(&self, pass: &mut wgpu::ComputePass<'_>, parity: usize, stamp: u32) {
        let uniforms = &self.uniform_groups[parity];
        let stride = self.segment_stride;
        let p = &self.pipelines;
        // One dispatch per sub-range, with its own window of the segment table.
        let per_segment =
            |pass: &mut wgpu::ComputePass<'_>, pipeline: &wgpu::ComputePipeline, grid: fn(&Grids) -> (u32, u32)| {
                pass.set_pipeline(pipeline);
                for (i, g) in self.grids.iter().enumerate() {
                    pass.set_bind_group(0, uniforms, &[stride * i as u32, stamp]);
                    pass.set_bind_group(1, &self.tensor_groups[i], &[]);
                    let (x, y) = grid(g);
                    pass.dispatch_workgroups(x, y, 1);
                }
            };
        // One dispatch over the whole tensor's sums (any sub-range's bind group will do).
        let once = |pass: &mut wgpu::ComputePass<'_>, pipeline: &wgpu::ComputePipeline, (x, y): (u32, u32)| {
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, uniforms, &[0, stamp]);
            pass.set_bind_group(1, &self.tensor_groups[0], &[]);
            pass.dispatch_workgroups(x, y, 1);
        };
        if self.shape.factored {
            per_segment(pass, &p.row_sums, |g| g.rows);
            per_segment(pass, &p.col_blocks, |g| g.col_blocks);
        }
        per_segment(pass, &p.p_sums, |g| g.chunks);
        if self.shape.factored {
            once(pass, &p.finalize_vars, self.vars_grid);
        }
        once(pass, &p.finalize_alpha, (1, 1));
        per_segment(pass, &p.u_sums, |g| g.chunks);
        once(pass, &p.finalize_coef, (1, 1));
        per_segment(pass, &p.update, |g| g.elements);
    }
}

/// A shaped step's group 0 at each parity of the recorded step: the step table and the
/// counter it reads, the sub-range window (moved by dynamic offset) and the layout of
/// `uniforms`, the gradient control. Shared by every family with entries of its own.
pub(crate) fn bind_shaped_uniforms(
    ctx: &GpuContext,
    kernel: &Kernel,
    uniforms: &wgpu::Buffer,
    layout_at: u64,
    Bound { steps, control }: Bound<'_>,
) -> Result<[wgpu::BindGroup; 2]> {
    let layout = &ctx.engine().shaped(kernel)?.0[0];
    ctx.scoped("binding a shaped step's uniforms", || {
        [0, 1].map(|parity| {
            let [table, counter, stamps] = steps.shaped_entries(parity);
            ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("wgpu-optim shaped step uniforms"),
                layout,
                entries: &[
                    table,
                    counter,
                    wgpu::BindGroupEntry { binding: 2, resource: uniform_window(uniforms, 0) },
                    wgpu::BindGroupEntry { binding: 3, resource: uniform_window(uniforms, layout_at) },
                    wgpu::BindGroupEntry { binding: 5, resource: control.as_entire_binding() },
                    stamps,
                ],
            })
        })
    })
}
