//! A staged optimizer's reduction on the GPU (see [`crate::step`]): a partial slot for
//! every workgroup of every sub-range, each tensor's (or the group's) range of slots, and
//! the finalize dispatch that sums each range in order into the sums the later stages read.

use crate::engine::{SEGMENT_REDUCE_BYTES, SegmentPlan, grid};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::step::{REDUCED_TERMS, Scope, Stage};

/// The buffers and bind groups of one optimizer's reduction stage.
pub(crate) struct Reduction {
    /// Group 2 of every stage: partials, per-tensor sums, the sub-range's window.
    pub group: wgpu::BindGroup,
    /// Dynamic-offset stride of the sub-range windows.
    pub stride: u32,
    finalize: wgpu::ComputePipeline,
    finalize_group: wgpu::BindGroup,
    /// Grid of the finalize dispatch: one workgroup per range.
    grid: (u32, u32),
    /// A per-block reduction: each sub-range's grid of one workgroup per block (no finalize).
    block_grids: Option<Vec<(u32, u32)>>,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SegmentReduce {
    tensor: u32,
    vec4_partials: u32,
    tail_partials: u32,
    _pad: u32,
}

const _: () = assert!(size_of::<SegmentReduce>() as u64 == SEGMENT_REDUCE_BYTES);

impl Reduction {
    /// For sub-ranges of `lens` elements dispatched by `plans`, sub-range `i` belonging to
    /// tensor `segment_tensor[i]` (consecutive sub-ranges per tensor), reduced over `stages`'
    /// scope.
    pub fn new(
        ctx: &GpuContext,
        stages: &[Stage],
        plans: &[SegmentPlan],
        lens: &[usize],
        segment_tensor: &[u32],
    ) -> Result<Self> {
        let scopes: Vec<Scope> = stages
            .iter()
            .filter_map(|s| match s {
                Stage::Reduce(scope) | Stage::ReduceMax(scope) => Some(*scope),
                _ => None,
            })
            .collect();
        // One reduction over a tensor, the group or blocks (crate::step::check_supported).
        let scope = match scopes[..] {
            [scope @ (Scope::Tensor | Scope::Group | Scope::Block(_))] => scope,
            _ => return Err(Error::Unsupported(format!("a step whose reductions are {scopes:?}"))),
        };
        let slot =
            |at: u64| u32::try_from(at).map_err(|_| Error::OverLimit(format!("{at} reduction partials exceed u32")));
        // Partial slots in sub-range order; each tensor's slots are one range.
        let mut windows = Vec::with_capacity(plans.len());
        let mut ranges: Vec<[u32; 2]> = Vec::new();
        let mut next = 0u64;
        let max_dim = ctx.tuning().max_workgroups_per_dimension;
        let mut block_grids = Vec::new();
        match scope {
            Scope::Block(block) => {
                // One slot per block; a block never crosses a sub-range, so each sub-range but
                // a tensor's last holds whole blocks.
                for (i, (&len, &tensor)) in lens.iter().zip(segment_tensor).enumerate() {
                    let last_of_tensor = segment_tensor.get(i + 1) != Some(&tensor);
                    if !last_of_tensor && len % block as usize != 0 {
                        return Err(Error::OverLimit(format!(
                            "a sub-range of {len} elements inside a tensor is not whole blocks of {block}: make \
                             Tuning::segment_bytes a multiple of {} bytes",
                            u64::from(block) * 4
                        )));
                    }
                    let blocks = len.div_ceil(block as usize) as u64;
                    windows.push(SegmentReduce { tensor, vec4_partials: slot(next)?, tail_partials: 0, _pad: 0 });
                    block_grids.push(grid(blocks, max_dim)?);
                    next += blocks;
                }
            }
            _ => {
                for (plan, &tensor) in plans.iter().zip(segment_tensor) {
                    let (vec4, tail) = plan.workgroups();
                    let tensor = if scope == Scope::Group { 0 } else { tensor };
                    windows.push(SegmentReduce {
                        tensor,
                        vec4_partials: slot(next)?,
                        tail_partials: slot(next + vec4)?,
                        _pad: 0,
                    });
                    let end = slot(next + vec4 + tail)?;
                    match ranges.get_mut(tensor as usize) {
                        Some(range) => range[1] = end,
                        None => ranges.push([slot(next)?, end]),
                    }
                    next += vec4 + tail;
                }
            }
        }
        // Partials and sums are f32 accumulators whatever the tensors' format.
        let terms = REDUCED_TERMS as u64 * crate::ElementFormat::F32.bytes();
        let stride = u64::from(ctx.limits().min_uniform_buffer_offset_alignment).max(SEGMENT_REDUCE_BYTES);
        let finalize = ctx.engine().finalize_pipeline(ctx)?;
        let engine = ctx.engine();
        let grid = grid(ranges.len().max(1) as u64, max_dim)?;
        let (group, finalize_group) = ctx.scoped("creating a reduction", || {
            let buffer = |label, size: u64, usage| {
                ctx.device().create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: size.max(16).next_multiple_of(16),
                    usage,
                    mapped_at_creation: false,
                })
            };
            let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
            let partials = buffer("wgpu-optim reduction partials", next.max(1) * terms, storage);
            let sums = buffer("wgpu-optim reduction sums", ranges.len() as u64 * terms, storage);
            let range_buffer = buffer("wgpu-optim reduction ranges", ranges.len() as u64 * 8, storage);
            ctx.queue().write_buffer(&range_buffer, 0, bytemuck::cast_slice(&ranges));
            let info = buffer(
                "wgpu-optim reduction windows",
                stride * windows.len() as u64,
                wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            );
            for (i, w) in windows.iter().enumerate() {
                ctx.queue().write_buffer(&info, stride * i as u64, bytemuck::bytes_of(w));
            }
            fn entire(b: &wgpu::Buffer, binding: u32) -> wgpu::BindGroupEntry<'_> {
                wgpu::BindGroupEntry { binding, resource: b.as_entire_binding() }
            }
            let window = wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &info,
                offset: 0,
                size: wgpu::BufferSize::new(SEGMENT_REDUCE_BYTES),
            });
            let group = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("wgpu-optim reduction"),
                layout: &engine.reduce_layout,
                entries: &[
                    entire(&partials, 0),
                    entire(&sums, 1),
                    wgpu::BindGroupEntry { binding: 2, resource: window },
                ],
            });
            let finalize_group = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("wgpu-optim reduction finalize"),
                layout: &engine.finalize_layout,
                entries: &[entire(&partials, 0), entire(&sums, 1), entire(&range_buffer, 2)],
            });
            (group, finalize_group)
        })?;
        let block_grids = matches!(scope, Scope::Block(_)).then_some(block_grids);
        Ok(Reduction { group, stride: stride as u32, finalize, finalize_group, grid, block_grids })
    }

    /// Records a per-block reduction's dispatch over sub-range `i` (the caller has set its
    /// bind groups); nothing for a reduction over tensors or the group.
    pub fn record_blocks(&self, pass: &mut wgpu::ComputePass<'_>, i: usize, pipeline: &wgpu::ComputePipeline) {
        if let Some(&(x, y)) = self.block_grids.as_ref().and_then(|g| g.get(i)) {
            pass.set_pipeline(pipeline);
            pass.dispatch_workgroups(x, y, 1);
        }
    }

    /// Records the finalize dispatch. It binds group 0 of its own: the caller sets the step's
    /// group 0 again before the next stage.
    pub fn record_finalize(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.finalize);
        pass.set_bind_group(0, &self.finalize_group, &[]);
        pass.dispatch_workgroups(self.grid.0, self.grid.1, 1);
    }
}
