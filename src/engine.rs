//! Pipelines, layouts and dispatch geometry: compile each shader variant once, and cover a
//! sub-range of any length with a vec4 dispatch plus a tail dispatch.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::optim::{Kernel, MAX_STATE};

const PRELUDE: &str = include_str!("../shaders/common.wgsl");
const VEC4: &str = "alias V = vec4<f32>; alias VU = vec4<u32>; alias VB = vec4<bool>; const TAIL = false;\n";
const TAIL: &str = "alias V = f32; alias VU = u32; alias VB = bool; const TAIL = true;\n";

/// Size in bytes of one per-step scalar block ([`crate::optim::ScalarBlock`]).
pub(crate) const SCALAR_BYTES: u64 = 64;

/// The two compiled widths of one variant.
#[derive(Clone, Debug)]
pub(crate) struct Pipelines {
    /// Four elements per invocation over the whole vec4s of a sub-range.
    pub vec4: wgpu::ComputePipeline,
    /// One element per invocation over the last `len % 4` elements.
    pub tail: wgpu::ComputePipeline,
}

#[derive(Hash, PartialEq, Eq)]
struct VariantKey {
    family: &'static str,
    workgroup_size: u32,
    /// Override constants as (name, f64 bits), in the kernel's order.
    constants: Vec<(&'static str, u64)>,
}

/// Compiled state shared by every optimizer of one context.
pub(crate) struct Engine {
    /// Group 0: the per-step scalar block, selected by a dynamic offset.
    pub scalars_layout: wgpu::BindGroupLayout,
    /// Group 1 for a family with `n` state tensors: p, g, then the states.
    tensor_layouts: Vec<wgpu::BindGroupLayout>,
    pipeline_layouts: Vec<wgpu::PipelineLayout>,
    pipelines: Mutex<HashMap<VariantKey, Pipelines>>,
}

/// Every tensor binding is read-write, gradients included: WebGPU forbids one buffer to be
/// bound read-only and read-write in the same dispatch, and parameters and gradients often
/// share one arena buffer.
fn storage(binding: u32) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only: false },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

impl Engine {
    pub fn new(device: &wgpu::Device) -> Self {
        let scalars_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("wgpu-optim scalars"),
            entries: &[wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: true,
                    min_binding_size: wgpu::BufferSize::new(SCALAR_BYTES),
                },
                count: None,
            }],
        });
        let tensor_layouts: Vec<_> = (0..=MAX_STATE)
            .map(|n| {
                let entries: Vec<_> = (0..2 + n as u32).map(storage).collect();
                device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some("wgpu-optim tensors"),
                    entries: &entries,
                })
            })
            .collect();
        let pipeline_layouts = tensor_layouts
            .iter()
            .map(|t| {
                device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: Some("wgpu-optim step"),
                    bind_group_layouts: &[Some(&scalars_layout), Some(t)],
                    immediate_size: 0,
                })
            })
            .collect();
        Engine { scalars_layout, tensor_layouts, pipeline_layouts, pipelines: Mutex::new(HashMap::new()) }
    }

    pub fn tensor_layout(&self, kernel: &Kernel) -> &wgpu::BindGroupLayout {
        &self.tensor_layouts[kernel.state.len()]
    }

    /// The pipelines of one variant, compiled on first use and cached.
    pub fn pipelines(
        &self,
        ctx: &GpuContext,
        kernel: &'static Kernel,
        constants: &[(&'static str, f64)],
    ) -> Result<Pipelines> {
        let workgroup_size = ctx.tuning().workgroup_size;
        let key = VariantKey {
            family: kernel.family,
            workgroup_size,
            constants: constants.iter().map(|&(n, v)| (n, v.to_bits())).collect(),
        };
        let mut cache = self.pipelines.lock().map_err(|_| Error::Wgpu {
            during: "compiling a pipeline",
            message: "the pipeline cache was poisoned by a panic in another thread".into(),
        })?;
        if let Some(p) = cache.get(&key) {
            return Ok(p.clone());
        }
        let mut all: Vec<(&str, f64)> = constants.to_vec();
        all.push(("WORKGROUP_SIZE", f64::from(workgroup_size)));
        let layout = &self.pipeline_layouts[kernel.state.len()];
        let compile = |width: &str| {
            let source = format!("{width}{PRELUDE}\n{}", kernel.source);
            ctx.scoped("compiling a pipeline", || {
                let module = ctx.device().create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(kernel.family),
                    source: wgpu::ShaderSource::Wgsl(source.into()),
                });
                ctx.device().create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(kernel.family),
                    layout: Some(layout),
                    module: &module,
                    entry_point: Some("main"),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &all,
                        zero_initialize_workgroup_memory: false,
                    },
                    cache: None,
                })
            })
        };
        let pipelines = Pipelines { vec4: compile(VEC4)?, tail: compile(TAIL)? };
        cache.insert(key, pipelines.clone());
        Ok(pipelines)
    }
}

/// A 2-D grid of at least `groups` workgroups, at most `max_dim` wide: `(x, y)`.
pub(crate) fn grid(groups: u64, max_dim: u32) -> Result<(u32, u32)> {
    let x = groups.min(u64::from(max_dim));
    let y = groups.div_ceil(x.max(1));
    if y > u64::from(max_dim) {
        return Err(Error::OverLimit(format!(
            "{groups} workgroups exceed a {max_dim}×{max_dim} grid; lower Tuning::segment_bytes"
        )));
    }
    Ok((x as u32, y as u32))
}

/// The dispatches that cover one sub-range, computed (and checked against the device's
/// limits) once, so that recording a step cannot fail half-way through a pass.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SegmentPlan {
    /// Grid of the vec4 kernel, if the sub-range holds at least one whole vec4.
    vec4: Option<(u32, u32)>,
    /// Workgroups of the tail kernel (0 when the length is a multiple of 4).
    tail: u32,
}

impl SegmentPlan {
    pub fn new(len: usize, workgroup_size: u32, max_dim: u32) -> Result<Self> {
        let wg = u64::from(workgroup_size);
        let vec4s = (len / 4) as u64;
        let vec4 = if vec4s > 0 { Some(grid(vec4s.div_ceil(wg), max_dim)?) } else { None };
        let tail = ((len % 4) as u64).div_ceil(wg) as u32;
        Ok(SegmentPlan { vec4, tail })
    }

    /// Records the dispatches; the caller has set both bind groups.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, pipelines: &Pipelines) {
        if let Some((x, y)) = self.vec4 {
            pass.set_pipeline(&pipelines.vec4);
            pass.dispatch_workgroups(x, y, 1);
        }
        if self.tail > 0 {
            pass.set_pipeline(&pipelines.tail);
            pass.dispatch_workgroups(self.tail, 1, 1);
        }
    }
}
