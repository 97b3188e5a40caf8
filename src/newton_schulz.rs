//! The GPU side of a step with matrix products (Muon's, shaders/muon.wgsl): per matrix, the
//! momentum and the Frobenius norm, then Newton–Schulz's products tiled in workgroup memory,
//! then the update — every dispatch inside the step's compute pass, scratch allocated once.
//!
//! Each matrix lies in one bound sub-range; its scratch (`mats`: two halves X and X' that
//! take turns, the Gram matrix A and the polynomial A') and sums (`work`) are its own.

use crate::engine::{UNIFORM_BYTES, grid};
use crate::error::{Error, Result};
use crate::factored::Bound;
use crate::format::ElementFormat;
use crate::gpu::GpuContext;
use crate::optim::{AdjustLr, Kernel, Optimizer};
use crate::tensor::GpuTensor;

const RWG: u64 = 256;
const TILE: u64 = 16;

/// Which half of `mats` a product reads and writes (`struct Segment` in the shader).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Window {
    x_at: u32,
    out_at: u32,
    len: u32,
    pad: u32,
}

/// The matrix and the regions of the scratch (`struct Layout` in the shader).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Layout {
    rows: u32,
    cols: u32,
    m: u32,
    n: u32,
    tall: u32,
    x0_at: u32,
    x1_at: u32,
    gram_at: u32,
    poly_at: u32,
    partials: u32,
    norm_at: u32,
    pad0: u32,
    ratio: [f32; 4],
}

const _: () = assert!(size_of::<Layout>() as u64 <= UNIFORM_BYTES && size_of::<Window>() as u64 <= UNIFORM_BYTES);

/// The uniform structs shared with the shader, by their WGSL names, with the Rust sizes.
#[cfg(test)]
pub(crate) const UNIFORM_STRUCTS: [(&str, usize); 2] =
    [("Segment", size_of::<Window>()), ("Layout", size_of::<Layout>())];

/// The tensor bindings (group 1), in binding order, as the shader declares them.
#[cfg(test)]
pub(crate) const BINDINGS: [&str; 5] = ["p", "g", "momentum_buffer", "mats", "work"];

struct Pipelines {
    momentum: wgpu::ComputePipeline,
    norm: wgpu::ComputePipeline,
    scale: wgpu::ComputePipeline,
    gram: wgpu::ComputePipeline,
    poly: wgpu::ComputePipeline,
    combine: wgpu::ComputePipeline,
    apply: wgpu::ComputePipeline,
    advance: wgpu::ComputePipeline,
}

/// Pipelines, iterations and a uniforms binding built for a new variant, not yet in place.
pub(crate) struct Rebuilt(Pipelines, u32, [wgpu::BindGroup; 2]);

/// A step with Newton–Schulz over one matrix: buffers, bind groups, pipelines and grids.
pub(crate) struct NewtonSchulzStep {
    kernel: &'static Kernel,
    pipelines: Pipelines,
    /// Newton–Schulz iterations recorded per step (the `NS_STEPS` constant).
    iterations: u32,
    uniforms: wgpu::Buffer,
    layout_at: u64,
    uniform_groups: [wgpu::BindGroup; 2],
    tensors: wgpu::BindGroup,
    stride: u32,
    elements: (u32, u32),
    gram: (u32, u32),
    combine: (u32, u32),
    _scratch: [wgpu::Buffer; 2],
}

/// The iterations a variant's constants ask for.
fn iterations(constants: &[(&'static str, f64)]) -> u32 {
    constants.iter().find(|(n, _)| *n == "NS_STEPS").map_or(0, |(_, v)| *v as u32)
}

fn storage(ctx: &GpuContext, label: &str, floats: usize) -> wgpu::Buffer {
    ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: (floats.max(4) as u64 * ElementFormat::F32.bytes()).next_multiple_of(16),
        usage: crate::tensor::TENSOR_USAGES,
        mapped_at_creation: false,
    })
}

impl NewtonSchulzStep {
    /// The step of `optimizer` over one matrix `params` of `shape` (2-D) and its `grads`;
    /// returns it with the state tensors of every slot of the kernel.
    pub fn new(
        ctx: &GpuContext,
        optimizer: &dyn Optimizer,
        (params, grads): (&GpuTensor, &GpuTensor),
        shape: &[usize],
        bound: Bound<'_>,
        constants: &[(&'static str, f64)],
    ) -> Result<(Self, Vec<Option<GpuTensor>>)> {
        optimizer.check_param_shape(shape)?;
        let &[rows, cols] = shape else {
            return Err(Error::Unsupported(format!("{}: a matrix-product step takes matrices", optimizer.name())));
        };
        let numel = rows.checked_mul(cols).ok_or_else(|| Error::OverLimit(format!("shape {shape:?}")))?;
        if params.len() != numel {
            return Err(Error::LengthMismatch { what: "params (shape)", expected: numel, actual: params.len() });
        }
        params.format().require("the parameters of a matrix-product step", ElementFormat::F32)?;
        if params.segments().len() != 1 || grads.segments().len() != 1 {
            return Err(Error::OverLimit(format!(
                "a {rows}×{cols} matrix ({} bytes) spans {} bound sub-ranges; a matrix-product step keeps each \
                 matrix in one: raise Tuning::segment_bytes",
                numel * 4,
                params.segments().len()
            )));
        }
        let (m, n) = (rows.min(cols), rows.max(cols));
        // mats: X, X' (numel each), A, A' (m² each); every index in u32.
        let gram_at = 2 * numel;
        let poly_at = gram_at + m * m;
        let mats_len = poly_at + m * m;
        let partials = (numel as u64).div_ceil(RWG);
        if mats_len > u32::MAX as usize || partials > u64::from(u32::MAX) - 1 {
            return Err(Error::OverLimit(format!(
                "{}: a {rows}×{cols} matrix's Newton–Schulz scratch exceeds u32 indexing",
                optimizer.name()
            )));
        }
        let max_dim = ctx.tuning().max_workgroups_per_dimension;
        let tiles = |r: usize, c: usize| -> Result<(u32, u32)> {
            let (x, y) = ((c as u64).div_ceil(TILE), (r as u64).div_ceil(TILE));
            if x > u64::from(max_dim) || y > u64::from(max_dim) {
                return Err(Error::OverLimit(format!(
                    "a {r}×{c} product needs {x}×{y} tiles of 16, more than max_workgroups_per_dimension {max_dim}"
                )));
            }
            Ok((x as u32, y as u32))
        };
        let (gram_grid, combine_grid) = (tiles(m, m)?, tiles(m, n)?);
        let elements = grid(partials.max(1), max_dim)?;
        let ratio = |f: AdjustLr| (f.apply(1.0, rows, cols)) as f32;
        let layout = Layout {
            rows: rows as u32,
            cols: cols as u32,
            m: m as u32,
            n: n as u32,
            tall: u32::from(rows > cols),
            x0_at: 0,
            x1_at: numel as u32,
            gram_at: gram_at as u32,
            poly_at: poly_at as u32,
            partials: partials as u32,
            norm_at: partials as u32,
            pad0: 0,
            ratio: [ratio(AdjustLr::Original), ratio(AdjustLr::MatchRmsAdamW), ratio(AdjustLr::SpectralUnclamped), 0.0],
        };
        let windows = [
            Window { x_at: 0, out_at: numel as u32, len: numel as u32, pad: 0 },
            Window { x_at: numel as u32, out_at: 0, len: numel as u32, pad: 0 },
        ];
        let kernel = optimizer.kernel();
        let pipelines = Self::compile(ctx, kernel, constants)?;
        let stride = u64::from(ctx.limits().min_uniform_buffer_offset_alignment).max(UNIFORM_BYTES);
        let layout_at = 2 * stride;
        let momentum = GpuTensor::zeros_in(ctx, ElementFormat::F32, &params.segment_lens())?;
        let (mats, work, uniforms) = ctx.scoped("creating a matrix-product step's buffers", || {
            let uniforms = ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-optim Newton–Schulz uniforms"),
                size: layout_at + stride,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            for (i, w) in windows.iter().enumerate() {
                ctx.queue().write_buffer(&uniforms, stride * i as u64, bytemuck::bytes_of(w));
            }
            ctx.queue().write_buffer(&uniforms, layout_at, bytemuck::bytes_of(&layout));
            (
                storage(ctx, "wgpu-optim Newton–Schulz matrices", mats_len),
                storage(ctx, "wgpu-optim Newton–Schulz sums", partials as usize + 1),
                uniforms,
            )
        })?;
        let uniform_groups = crate::factored::bind_shaped_uniforms(ctx, kernel, &uniforms, layout_at, bound)?;
        let layouts = &ctx.engine().shaped(kernel)?.0;
        let tensors = ctx.scoped("binding a matrix-product step's tensors", || {
            let resources = vec![
                params.segments()[0].binding(),
                grads.segments()[0].binding(),
                momentum.segments()[0].binding(),
                mats.as_entire_binding(),
                work.as_entire_binding(),
            ];
            crate::engine::bind_in_order(ctx, "wgpu-optim Newton–Schulz tensors", &layouts[1], resources)
        })?;
        let step = NewtonSchulzStep {
            kernel,
            pipelines,
            iterations: iterations(constants),
            uniforms,
            layout_at,
            uniform_groups,
            tensors,
            stride: stride as u32,
            elements,
            gram: gram_grid,
            combine: combine_grid,
            _scratch: [mats, work],
        };
        Ok((step, vec![Some(momentum)]))
    }

    fn compile(ctx: &GpuContext, kernel: &'static Kernel, constants: &[(&'static str, f64)]) -> Result<Pipelines> {
        let engine = ctx.engine();
        // Products tiled in workgroup memory, or straight from storage (Tuning::tiled_products).
        let mut constants = constants.to_vec();
        constants.push(("TILED", crate::optim::flag(ctx.tuning().tiled_products)));
        let compile = |entry| engine.shaped_pipeline(ctx, kernel, entry, &constants);
        Ok(Pipelines {
            momentum: compile("momentum")?,
            norm: compile("norm")?,
            scale: compile("scale")?,
            gram: compile("gram")?,
            poly: compile("poly")?,
            combine: compile("combine")?,
            apply: compile("apply")?,
            advance: compile("advance")?,
        })
    }

    /// Rebuilds the pipelines for new override constants and the uniforms' binding for
    /// `bound`'s gradient control. Nothing changes unless everything was built.
    pub fn rebuilt(&self, ctx: &GpuContext, constants: &[(&'static str, f64)], bound: Bound<'_>) -> Result<Rebuilt> {
        let pipelines = Self::compile(ctx, self.kernel, constants)?;
        let groups = crate::factored::bind_shaped_uniforms(ctx, self.kernel, &self.uniforms, self.layout_at, bound)?;
        Ok(Rebuilt(pipelines, iterations(constants), groups))
    }

    /// Puts what [`rebuilt`](Self::rebuilt) made in place.
    pub fn install(&mut self, Rebuilt(pipelines, iterations, groups): Rebuilt) {
        (self.pipelines, self.iterations, self.uniform_groups) = (pipelines, iterations, groups);
    }

    /// The counter's advance, recorded once after every tensor's stages of a step.
    pub fn advance_pipeline(&self) -> &wgpu::ComputePipeline {
        &self.pipelines.advance
    }

    /// Records this matrix's stages of one step.
    pub fn record_stages(&self, pass: &mut wgpu::ComputePass<'_>, parity: usize, stamp: u32) {
        let uniforms = &self.uniform_groups[parity];
        let p = &self.pipelines;
        let mut dispatch = |pipeline: &wgpu::ComputePipeline, window: u32, (x, y): (u32, u32)| {
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, uniforms, &[self.stride * window, stamp]);
            pass.set_bind_group(1, &self.tensors, &[]);
            pass.dispatch_workgroups(x, y, 1);
        };
        dispatch(&p.momentum, 0, self.elements);
        dispatch(&p.norm, 0, (1, 1));
        dispatch(&p.scale, 0, self.elements);
        for i in 0..self.iterations {
            let window = i % 2;
            dispatch(&p.gram, window, self.gram);
            dispatch(&p.poly, window, self.gram);
            dispatch(&p.combine, window, self.combine);
        }
        dispatch(&p.apply, 0, self.elements);
    }
}
