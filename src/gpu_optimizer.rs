//! An optimizer bound to GPU tensors: owns the state, records fused steps.

use ndarray::Array1;

use crate::engine::{Pipelines, SCALAR_BYTES, ScalarRing, SegmentPlan};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::optim::{MAX_STATE, Optimizer, StateSlot};
use crate::tensor::{GpuTensor, HostData};

/// Steps whose scalars can be in flight at once: one [`GpuOptimizer::run`] submit covers at
/// most this many steps, and at most this many may be recorded with
/// [`GpuOptimizer::record`] between two submits of the queue.
pub const SCALAR_SLOTS: u32 = 256;

/// An optimizer whose parameters, gradients and state live on the GPU.
///
/// Everything a step needs is built once at construction: state buffers, the compiled
/// variant, one bind group per sub-range, and a ring of per-step scalar slots. A step then
/// writes one 64-byte scalar block and records one dispatch (plus one for a tail of
/// `len % 4` elements) per sub-range; `K` steps are `K` rounds of dispatches inside one
/// compute pass and one submit.
pub struct GpuOptimizer {
    ctx: GpuContext,
    optimizer: Box<dyn Optimizer>,
    params: GpuTensor,
    grads: GpuTensor,
    state: Vec<Option<GpuTensor>>,
    step: u64,
    pipelines: Pipelines,
    plans: Vec<SegmentPlan>,
    tensor_groups: Vec<wgpu::BindGroup>,
    scalars: wgpu::Buffer,
    scalars_group: wgpu::BindGroup,
    ring: ScalarRing,
}

impl std::fmt::Debug for GpuOptimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuOptimizer")
            .field("optimizer", &self.optimizer)
            .field("len", &self.params.len())
            .field("step", &self.step)
            .finish()
    }
}

impl GpuOptimizer {
    /// Uploads `params` and creates zeroed gradients and state on the GPU.
    pub fn new(
        ctx: &GpuContext,
        optimizer: impl Into<Box<dyn Optimizer>>,
        params: &(impl HostData + ?Sized),
    ) -> Result<Self> {
        let optimizer = optimizer.into();
        optimizer.validate()?;
        let params = GpuTensor::from_slice(ctx, params.as_f32s()?)?;
        let grads = GpuTensor::zeros(ctx, params.len())?;
        Self::from_tensors(ctx, optimizer, params, grads)
    }

    /// Binds to parameter and gradient tensors that already exist on the GPU (for example
    /// views of the caller's buffers, [`GpuTensor::from_buffer`]); steps update `params` in
    /// place and read `grads`. Both must come from this context.
    pub fn from_tensors(
        ctx: &GpuContext,
        optimizer: impl Into<Box<dyn Optimizer>>,
        params: GpuTensor,
        grads: GpuTensor,
    ) -> Result<Self> {
        let optimizer = optimizer.into();
        optimizer.validate()?;
        if grads.len() != params.len() {
            return Err(Error::LengthMismatch { what: "grads", expected: params.len(), actual: grads.len() });
        }
        let expected = params.segment_lens();
        if grads.segment_lens() != expected {
            return Err(Error::LayoutMismatch { what: "grads", expected, actual: grads.segment_lens() });
        }
        let kernel = optimizer.kernel();
        // State laid out like the parameters, sub-range for sub-range.
        let lens = params.segment_lens();
        let state = (0..kernel.state.len())
            .map(|i| {
                optimizer.uses_state(i).then(|| GpuTensor::filled_in(ctx, &lens, optimizer.state_init(i))).transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        let pipelines = ctx.engine().pipelines(ctx, kernel, &optimizer.constants())?;
        let t = ctx.tuning();
        let plans = params
            .segments()
            .iter()
            .map(|s| SegmentPlan::new(s.len, t.workgroup_size, t.max_workgroups_per_dimension))
            .collect::<Result<Vec<_>>>()?;
        let ring = ScalarRing::new(ctx);
        let (tensor_groups, scalars, scalars_group) = ctx.scoped("binding tensors", || {
            // Unused state slots (v_max without AMSGrad, ...) are bound to a small placeholder.
            let placeholder = ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-optim unused state"),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
            let layout = ctx.engine().tensor_layout(kernel);
            let tensor_groups: Vec<_> = (0..params.segments().len())
                .map(|i| {
                    let mut resources = vec![params.segments()[i].binding(), grads.segments()[i].binding()];
                    for s in &state {
                        resources.push(match s {
                            Some(t) => t.segments()[i].binding(),
                            None => placeholder.as_entire_binding(),
                        });
                    }
                    let entries: Vec<_> = resources
                        .into_iter()
                        .enumerate()
                        .map(|(b, resource)| wgpu::BindGroupEntry { binding: b as u32, resource })
                        .collect();
                    ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some("wgpu-optim tensors"),
                        layout,
                        entries: &entries,
                    })
                })
                .collect();
            let scalars = ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-optim step scalars"),
                size: ring.bytes(),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let scalars_group = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("wgpu-optim step scalars"),
                layout: &ctx.engine().scalars_layout,
                entries: &[wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &scalars,
                        offset: 0,
                        size: wgpu::BufferSize::new(SCALAR_BYTES),
                    }),
                }],
            });
            (tensor_groups, scalars, scalars_group)
        })?;
        Ok(GpuOptimizer {
            ctx: ctx.clone(),
            optimizer,
            params,
            grads,
            state,
            step: 0,
            pipelines,
            plans,
            tensor_groups,
            scalars,
            scalars_group,
            ring,
        })
    }

    /// Uploads `grads` and takes one step (submitted; does not wait for the GPU).
    pub fn step(&mut self, grads: &(impl HostData + ?Sized)) -> Result<()> {
        self.grads.write(&self.ctx, grads.as_f32s()?)?;
        self.run(1)
    }

    /// Takes `steps` steps on the gradients already on the GPU, `SCALAR_SLOTS` steps per
    /// submit, each submit one compute pass. Does not wait for the GPU.
    pub fn run(&mut self, steps: u32) -> Result<()> {
        let mut left = steps;
        while left > 0 {
            let k = left.min(SCALAR_SLOTS);
            let ctx = self.ctx.clone();
            ctx.scoped("recording a step", || {
                let mut encoder = ctx
                    .device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("wgpu-optim step") });
                self.encode(&mut encoder, k);
                ctx.queue().submit([encoder.finish()]);
            })?;
            self.step += u64::from(k);
            left -= k;
        }
        Ok(())
    }

    /// Records `steps` steps into the caller's encoder, as dispatches of one compute pass,
    /// so they run in the caller's submit after whatever the encoder already holds (a
    /// backward pass writing the gradients, say). The step count advances now; at most
    /// [`SCALAR_SLOTS`] steps may be recorded between two submits of the queue.
    pub fn record(&mut self, encoder: &mut wgpu::CommandEncoder, steps: u32) -> Result<()> {
        if steps > SCALAR_SLOTS {
            return Err(Error::OverLimit(format!(
                "{steps} steps recorded at once; at most {SCALAR_SLOTS} fit between two submits"
            )));
        }
        let ctx = self.ctx.clone();
        ctx.scoped("recording a step", || self.encode(encoder, steps))?;
        self.step += u64::from(steps);
        Ok(())
    }

    /// Writes the scalars of steps `self.step + 1 ..= self.step + k` into the next ring
    /// slots and records their dispatches in one compute pass.
    fn encode(&mut self, encoder: &mut wgpu::CommandEncoder, k: u32) {
        let first = self.write_scalars(k);
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("wgpu-optim step"),
            timestamp_writes: None,
        });
        for j in 0..k {
            self.record_step(&mut pass, first, j);
        }
    }

    /// Queues the scalars of the next `k` steps; returns the first ring slot.
    pub(crate) fn write_scalars(&mut self, k: u32) -> u32 {
        let (optimizer, step) = (&self.optimizer, self.step);
        self.ring.write(&self.ctx, &self.scalars, k, |j| optimizer.scalars(step + 1 + u64::from(j)))
    }

    /// Records the dispatches of step `j` of a write that began at ring slot `first`.
    pub(crate) fn record_step(&self, pass: &mut wgpu::ComputePass<'_>, first: u32, j: u32) {
        pass.set_bind_group(0, &self.scalars_group, &[self.ring.offset(first, j)]);
        for (plan, group) in self.plans.iter().zip(&self.tensor_groups) {
            pass.set_bind_group(1, group, &[]);
            plan.record(pass, &self.pipelines);
        }
    }

    /// Counts `k` recorded steps.
    pub(crate) fn advance(&mut self, k: u32) {
        self.step += u64::from(k);
    }

    /// Replaces the configuration between steps: any hyper-parameter or flag of the same
    /// family that keeps the same state tensors (so not turning AMSGrad on, say). Nothing
    /// is reallocated; a new variant is compiled once and cached.
    pub fn reconfigure(&mut self, optimizer: impl Into<Box<dyn Optimizer>>) -> Result<()> {
        let next = optimizer.into();
        crate::optim::check_takeover(&*self.optimizer, &*next)?;
        self.pipelines = self.ctx.engine().pipelines(&self.ctx, next.kernel(), &next.constants())?;
        self.optimizer = next;
        Ok(())
    }

    /// Steps taken so far (torch's `state["step"]`).
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The optimizer's configuration.
    pub fn optimizer(&self) -> &dyn Optimizer {
        &*self.optimizer
    }

    /// Changes the learning rate for the following steps (nothing is rebuilt).
    pub fn set_lr(&mut self, lr: f64) -> Result<()> {
        crate::optim::set_lr_checked(&mut *self.optimizer, lr)
    }

    /// The parameters on the GPU.
    pub fn params(&self) -> &GpuTensor {
        &self.params
    }

    /// The gradients the next step reads.
    pub fn grads(&self) -> &GpuTensor {
        &self.grads
    }

    /// The state tensors this configuration uses, with their names.
    pub fn state(&self) -> impl Iterator<Item = (&'static StateSlot, &GpuTensor)> {
        self.optimizer.kernel().state.iter().zip(&self.state).filter_map(|(slot, t)| Some((slot, t.as_ref()?)))
    }

    /// One state tensor by role (`m`) or torch name (`exp_avg`).
    pub fn state_tensor(&self, name: &str) -> Option<&GpuTensor> {
        self.state().find(|(s, _)| s.role == name || s.torch_name == name).map(|(_, t)| t)
    }

    /// Reads the parameters back (waits for the GPU).
    pub fn read_params(&self) -> Result<Array1<f32>> {
        self.params.to_array(&self.ctx)
    }

    /// Reads one state tensor back by role or torch name (waits for the GPU).
    pub fn read_state(&self, name: &str) -> Result<Array1<f32>> {
        match self.state_tensor(name) {
            Some(t) => t.to_array(&self.ctx),
            None => Err(Error::BadBufferRange {
                what: "read_state",
                message: format!(
                    "{} keeps no state named {name:?}; it has {:?}",
                    self.optimizer.name(),
                    self.state().map(|(s, _)| s.torch_name).collect::<Vec<_>>()
                ),
            }),
        }
    }
}

const _: () = assert!(MAX_STATE + 2 <= 8, "at most 8 storage buffers per kernel");
