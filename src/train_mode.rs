//! Moving a schedule-free optimizer's parameters between its train point y and its eval
//! point x, `p = lerp(p, z, w)`, on the GPU (shaders/mode_swap.wgsl) or on the host: the
//! authors' `train()` and `eval()`.

use crate::engine::{UNIFORM_BYTES, grid, uniform_window};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::tensor::GpuTensor;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Swap {
    len: u32,
    weight: f32,
}

/// `params = lerp(params, z, weight)` element by element, submitted now (after everything
/// submitted before). Both tensors f32, laid out alike.
pub(crate) fn swap_on_gpu(ctx: &GpuContext, params: &GpuTensor, z: &GpuTensor, weight: f32) -> Result<()> {
    params.format().require("the parameters moved between train and eval mode", crate::ElementFormat::F32)?;
    if z.segment_lens() != params.segment_lens() {
        return Err(Error::LayoutMismatch { what: "z", expected: params.segment_lens(), actual: z.segment_lens() });
    }
    let engine = ctx.engine();
    let pipeline = engine.mode_swap_pipeline(ctx)?;
    let max_dim = ctx.tuning().max_workgroups_per_dimension;
    let stride = u64::from(ctx.limits().min_uniform_buffer_offset_alignment).max(UNIFORM_BYTES);
    let segments = params.segments();
    let grids =
        segments.iter().map(|s| grid((s.len as u64).div_ceil(256).max(1), max_dim)).collect::<Result<Vec<_>>>()?;
    ctx.scoped("moving the parameters between train and eval mode", || {
        let info = ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgpu-optim mode swap"),
            size: stride * segments.len() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let unused = ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgpu-optim mode swap (unused)"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        for (i, s) in segments.iter().enumerate() {
            let swap = Swap { len: s.len as u32, weight };
            ctx.queue().write_buffer(&info, stride * i as u64, bytemuck::bytes_of(&swap));
        }
        let group0 = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("wgpu-optim mode swap"),
            layout: &engine.monitor_layouts[0],
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: unused.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 1, resource: uniform_window(&info, 0) },
            ],
        });
        let mut encoder = ctx
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("wgpu-optim mode swap") });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("wgpu-optim mode swap"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline);
            for (i, ((p, z), (x, y))) in segments.iter().zip(z.segments()).zip(&grids).enumerate() {
                let group1 = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("wgpu-optim mode swap tensors"),
                    layout: &engine.monitor_layouts[1],
                    entries: &[
                        wgpu::BindGroupEntry { binding: 0, resource: p.binding() },
                        wgpu::BindGroupEntry { binding: 1, resource: z.binding() },
                    ],
                });
                pass.set_bind_group(0, &group0, &[(stride * i as u64) as u32]);
                pass.set_bind_group(1, &group1, &[]);
                pass.dispatch_workgroups(*x, *y, 1);
            }
        }
        ctx.queue().submit([encoder.finish()]);
    })
}

/// The host's twin of [`swap_on_gpu`].
pub(crate) fn swap_on_host(params: &mut [f32], z: &[f32], weight: f32) {
    for (p, &z) in params.iter_mut().zip(z) {
        *p = crate::optim::lerp(*p, z, weight);
    }
}

/// The error of a step taken in eval mode.
pub(crate) fn refuse_step(optimizer: &str) -> Error {
    Error::WrongMode(format!(
        "{optimizer} is in eval mode (its parameters hold the averaged x): call train() before stepping, as the \
         schedule-free package requires"
    ))
}

/// The error of a checkpoint saved in train mode.
pub(crate) fn refuse_save(optimizer: &str) -> Error {
    Error::WrongMode(format!(
        "{optimizer} is in train mode: call eval() before saving, as the schedule-free package requires (the \
         parameters then hold x, and a loaded checkpoint starts in eval mode)"
    ))
}
