//! An optimizer bound to GPU tensors: owns the state, records fused steps.

use ndarray::Array1;

use crate::checkpoint::{GroupSnapshot, Restore, Snapshot};
use crate::engine::{self, Formats, Pipelines, SegmentPlan, StepGroups, StepTable};
use crate::error::{Error, Result};
use crate::factored::Bound;
use crate::gpu::GpuContext;
use crate::monitor::{Checked, HealthCheck, TensorHealth};
use crate::optim::{Optimizer, ScalarBlock, StateSlot};
use crate::precision::{MASTER, Precision};
use crate::reduction::Reduction;
use crate::schedule::{Schedule, Scheduled};
use crate::shaped::ShapedStep;
use crate::step::Stage;
use crate::tensor::{GpuTensor, HostData};

pub use crate::engine::SCALAR_SLOTS;

/// The most steps the GPU's u32 counter counts (its slot tags compare as u32).
const MAX_STEP: u64 = u32::MAX as u64;

/// The element formats a step of `o` over `params` reads, and how it stores them: the
/// variant the engine compiles.
fn formats(o: &dyn Optimizer, params: &GpuTensor, precision: Precision) -> Formats {
    Formats {
        params: params.format(),
        // A slot the configuration does not use is never accessed: f32 (no 8-bit finish).
        state: (0..o.kernel().state.len())
            .map(|i| if o.uses_state(i) { o.state_format(i) } else { crate::ElementFormat::F32 })
            .collect(),
        store: precision.store(),
    }
}

/// An optimizer whose parameters, gradients and state live on the GPU.
///
/// Everything a step needs is built once at construction: state buffers, the compiled
/// variant, one bind group per sub-range, and the GPU-resident step (a counter on the GPU and
/// a table of per-step scalars it indexes). A step then queues its scalars into the table and
/// records one dispatch (plus one for a tail of `len % 4` elements) per sub-range and one
/// that advances the counter; `K` steps are `K` rounds of dispatches in one submit (one
/// compute pass over one parameter buffer, a pass per step over several). The step kernels
/// bind the table and the counter read-only, so dispatches over separate tensors share no
/// written buffer.
pub struct GpuOptimizer {
    ctx: GpuContext,
    optimizer: Box<dyn Optimizer>,
    /// A schedule-free optimizer's eval mode: the parameters hold x, and steps are refused.
    eval_mode: bool,
    params: GpuTensor,
    grads: GpuTensor,
    state: Vec<Option<GpuTensor>>,
    /// How a step stores the parameters, and the f32 master copy where it keeps one.
    precision: Precision,
    master: Option<GpuTensor>,
    step: u64,
    /// The element-wise and reduction pipelines (`None` for a shaped step, whose own are in
    /// `factored`).
    pipelines: Option<Pipelines>,
    /// Each parameter tensor's shape (flat unless given).
    shapes: Vec<Vec<usize>>,
    /// A shaped step's buffers, bind groups and pipelines, one per parameter tensor.
    factored: Vec<ShapedStep>,
    plans: Vec<SegmentPlan>,
    tensor_groups: Vec<wgpu::BindGroup>,
    steps: StepTable,
    /// The one physical buffer every parameter sub-range lies in, if there is one (its steps
    /// then share a compute pass; see `engine::encode_passes`).
    param_buffer: Option<wgpu::Buffer>,
    step_groups: StepGroups,
    /// The counter's advance as a dispatch of its own (where the step's last kernel does not
    /// advance it).
    advance: wgpu::ComputePipeline,
    /// The schedule, the learning rate it scales, and the step it started after.
    schedule: Option<(Box<dyn Schedule>, f64, u64)>,
    /// A shared gradient control the kernels read (clipping, loss scale, skip-on-inf).
    control: Option<wgpu::Buffer>,
    /// With update tracking: the parameters as they were before the last recorded step.
    before: Option<GpuTensor>,
    /// The health check over the parameters and state, built on first use.
    health: Option<HealthCheck>,
    /// A staged optimizer's reduction (buffers, windows, finalize).
    reduction: Option<Reduction>,
    /// The scalars of the steps about to be recorded, and the learning rate (and cycled
    /// momentum) they end at.
    prepared: (Vec<ScalarBlock>, Scheduled),
    /// The learning rate and momentum before step `t`, at `t % SCALAR_SLOTS`, for the
    /// recorded steps: where a sync finds steps not taken, they go back to before the first.
    lr_before: Vec<Scheduled>,
    /// The learning rate and momentum before each prepared step.
    prepared_before: Vec<Scheduled>,
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
        let segments = params.segments().len();
        let shapes = vec![vec![params.len()]];
        Self::from_parts(ctx, optimizer.into(), params, grads, vec![0; segments], shapes, Precision::default())
    }

    /// The same optimizer storing its parameters `precision`'s way ([`Precision`]): bf16
    /// parameters with stochastic rounding, or 16-bit ones with an f32 master copy (which
    /// starts as the parameters' values). Built again with fresh state, so before the first
    /// step; the schedule and update tracking carry over. `Err(Unsupported)` names what does
    /// not fit (stochastic rounding of other than bf16, master weights of f32 parameters, an
    /// optimizer with a reduction stage).
    pub fn with_precision(self, precision: Precision) -> Result<Self> {
        if self.step > 0 {
            return Err(Error::Unsupported(format!(
                "with_precision after {} steps: the precision is chosen before the first step (the state is \
                 built for it)",
                self.step
            )));
        }
        let segments = self.params.segments().len();
        let (params, grads, shapes) = (self.params.clone(), self.grads.clone(), self.shapes.clone());
        let mut next =
            Self::from_parts(&self.ctx, self.optimizer.clone(), params, grads, vec![0; segments], shapes, precision)?;
        next.set_schedule(self.schedule.map(|(s, _, _)| s))?;
        next.track_updates(self.before.is_some())?;
        Ok(next)
    }

    /// How a step stores the parameters.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Into train mode: a schedule-free optimizer's parameters become the gradient point y
    /// again (the authors' `optimizer.train()`), on the GPU; nothing for others, or where the
    /// optimizer is in train mode already. A new optimizer starts in train mode.
    pub fn train(&mut self) -> Result<()> {
        self.set_mode(true)
    }

    /// Into eval mode: a schedule-free optimizer's parameters become the averaged x (the
    /// authors' `optimizer.eval()`), what to evaluate and to save; steps are refused until
    /// [`train`](Self::train). Nothing for others.
    pub fn eval(&mut self) -> Result<()> {
        self.set_mode(false)
    }

    /// Whether the optimizer is in eval mode.
    pub fn is_eval(&self) -> bool {
        self.eval_mode
    }

    fn set_mode(&mut self, train: bool) -> Result<()> {
        let Some((slot, weight)) = self.optimizer.train_mode_weight(train) else { return Ok(()) };
        if train != self.eval_mode {
            return Ok(());
        }
        // Before the first step taken z is not yet the parameters' copy: nothing to move.
        if self.read_gpu_step()? > 0 {
            let name = self.optimizer.name();
            let z = self.state.get(slot).and_then(Option::as_ref).ok_or_else(|| Error::UnknownState {
                optimizer: name,
                name: "z".into(),
                available: Vec::new(),
            })?;
            crate::train_mode::swap_on_gpu(&self.ctx, &self.params, z, weight)?;
        }
        self.eval_mode = !train;
        Ok(())
    }

    /// Uploads `params`, a tensor of `shape` (row-major, as torch's), and creates zeroed
    /// gradients and state: what a shaped step such as Adafactor's follows (rank ≥ 2 is
    /// factored over the last two dimensions, each matrix kept within one bound sub-range).
    /// Element-wise optimizers ignore the shape.
    pub fn with_shape(
        ctx: &GpuContext,
        optimizer: impl Into<Box<dyn Optimizer>>,
        params: &(impl HostData + ?Sized),
        shape: &[usize],
    ) -> Result<Self> {
        let optimizer = optimizer.into();
        optimizer.validate()?;
        let data = params.as_f32s()?;
        crate::optim::check_shape("params (shape)", shape, data.len())?;
        let numel = data.len();
        let seg_len = if optimizer.kernel().is_shaped() {
            crate::factored::segment_len(ctx, shape)?
        } else {
            ctx.tuning().segment_len()
        };
        let params = GpuTensor::zeros_with(ctx, crate::ElementFormat::F32, numel, seg_len)?;
        params.write(ctx, data)?;
        let grads = GpuTensor::zeros_with(ctx, crate::ElementFormat::F32, numel, seg_len)?;
        let segments = params.segments().len();
        Self::from_parts(ctx, optimizer, params, grads, vec![0; segments], vec![shape.to_vec()], Precision::default())
    }

    /// Binds several parameter tensors (concatenated in `params`, sub-range `i` belonging to
    /// tensor `segment_tensor[i]`) as one optimizer: a parameter group.
    pub(crate) fn from_parts(
        ctx: &GpuContext,
        optimizer: Box<dyn Optimizer>,
        params: GpuTensor,
        grads: GpuTensor,
        segment_tensor: Vec<u32>,
        shapes: Vec<Vec<usize>>,
        precision: Precision,
    ) -> Result<Self> {
        optimizer.validate()?;
        precision.check(&*optimizer, params.format())?;
        crate::step::check_supported(optimizer.name(), optimizer.kernel().stages)?;
        if grads.len() != params.len() {
            return Err(Error::LengthMismatch { what: "grads", expected: params.len(), actual: grads.len() });
        }
        let expected = params.segment_lens();
        if grads.segment_lens() != expected {
            return Err(Error::LayoutMismatch { what: "grads", expected, actual: grads.segment_lens() });
        }
        if grads.format() != params.format() {
            return Err(Error::Unsupported(format!(
                "{} gradients for {} parameters: a step reads both in one element format",
                grads.format().name(),
                params.format().name()
            )));
        }
        let (param_parts, grad_parts) = (params.split(&segment_tensor), grads.split(&segment_tensor));
        let mut bound: Vec<crate::tensor::BoundTensor<'_>> = Vec::new();
        for (i, (p, g)) in param_parts.iter().zip(&grad_parts).enumerate() {
            bound.push((format!("parameter tensor {i}"), p, true));
            bound.push((format!("the gradient of tensor {i}"), g, false));
        }
        crate::tensor::check_disjoint(&bound)?;
        // Every distinct buffer on this context's device (a bind group would not tell).
        let mut buffers: Vec<&wgpu::Buffer> =
            params.segments().iter().chain(grads.segments()).map(|s| &s.buffer).collect();
        buffers.sort();
        buffers.dedup();
        for b in buffers {
            crate::tensor::check_device(ctx, b, "a tensor bound to the optimizer")?;
        }
        let kernel = optimizer.kernel();
        // Sub-ranges end to end in one buffer (an arena's views, handed over one by one) step
        // as one: a dispatch for the run, not one per view. A per-tensor reduction and a
        // shaped step keep each tensor's own.
        // 8-bit state: each tensor's sub-ranges cut on its blocks of 256 (a block's absmax is
        // found in one workgroup), tensors kept apart (each has blocks of its own).
        let blockwise = (0..kernel.state.len()).any(|i| optimizer.state_format(i) == crate::ElementFormat::Blockwise8);
        let (params, grads, segment_tensor) = if blockwise {
            let max_len = ctx.tuning().segment_len();
            let cut = |parts: &[GpuTensor]| {
                parts.iter().map(|t| t.in_blocks(crate::quant::BLOCK, max_len)).collect::<Result<Vec<_>>>()
            };
            let (p, g) = (cut(&param_parts)?, cut(&grad_parts)?);
            for (a, b) in p.iter().zip(&g) {
                if a.segment_lens() != b.segment_lens() {
                    return Err(Error::LayoutMismatch {
                        what: "grads (cut on 8-bit blocks)",
                        expected: a.segment_lens(),
                        actual: b.segment_lens(),
                    });
                }
            }
            let segment_tensor =
                p.iter().enumerate().flat_map(|(t, x)| std::iter::repeat_n(t as u32, x.segments().len())).collect();
            let concat = |parts: &[GpuTensor]| GpuTensor::concat(&parts.iter().collect::<Vec<_>>());
            (concat(&p)?, concat(&g)?, segment_tensor)
        } else if kernel.is_staged() || kernel.is_shaped() {
            (params, grads, segment_tensor)
        } else {
            let max_len = ctx.tuning().segment_len();
            let [p, g] = crate::tensor::merge_contiguous([&params, &grads], max_len);
            (p, g, segment_tensor)
        };
        let first = &params.segments()[0].buffer;
        let param_buffer = params.segments().iter().all(|s| &s.buffer == first).then(|| first.clone());
        let steps = StepTable::new(ctx, kernel.scalar_size)?;
        let step_groups = steps.bind(ctx, &steps.control)?;
        let parts = if kernel.is_shaped() {
            Parts::shaped(ctx, &*optimizer, (&param_parts, &grad_parts), &shapes, &steps)?
        } else {
            Parts::elementwise(ctx, &*optimizer, (&params, &grads), &segment_tensor, precision)?
        };
        Ok(GpuOptimizer {
            ctx: ctx.clone(),
            optimizer,
            params,
            grads,
            state: parts.state,
            precision,
            master: parts.master,
            step: 0,
            pipelines: parts.pipelines,
            shapes,
            factored: parts.factored,
            plans: parts.plans,
            tensor_groups: parts.tensor_groups,
            steps,
            param_buffer,
            step_groups,
            advance: parts.advance,
            schedule: None,
            control: None,
            before: None,
            health: None,
            eval_mode: false,
            reduction: parts.reduction,
            prepared: (Vec::new(), Scheduled::default()),
            lr_before: vec![Scheduled::default(); SCALAR_SLOTS as usize],
            prepared_before: Vec::new(),
        })
    }

    /// Uploads `grads` and takes one step (submitted; does not wait for the GPU).
    pub fn step(&mut self, grads: &(impl HostData + ?Sized)) -> Result<()> {
        self.grads.write(&self.ctx, grads.as_f32s()?)?;
        self.run(1)
    }

    /// Takes `steps` steps on the gradients already on the GPU, `SCALAR_SLOTS` steps per
    /// submit. Does not wait for the GPU.
    pub fn run(&mut self, steps: u32) -> Result<()> {
        engine::run(self, steps)
    }

    /// Records `steps` steps into the caller's encoder, in compute passes of their own (one
    /// for every step over one parameter buffer, one per step over several), so they run in
    /// the caller's submit after whatever the encoder already holds (a backward pass writing
    /// the gradients, say). The step count advances now; at most [`SCALAR_SLOTS`] steps may
    /// be recorded between two submits of the queue.
    ///
    /// Submit every encoder recorded into, in the order recorded: the GPU's step counter is
    /// two buffers used in turn by the recorded steps, each stamped with the step that is to
    /// read it. A recorded step that never runs (an encoder dropped, a submit that failed)
    /// leaves the next step an older counter: that step is not taken, the counter carries on
    /// from the newer one, and [`sync`](Self::sync) reports [`Error::StaleSteps`].
    pub fn record(&mut self, encoder: &mut wgpu::CommandEncoder, steps: u32) -> Result<()> {
        engine::record(self, encoder, steps)
    }

    /// Records `steps` steps into the caller's open compute pass, after the dispatches it
    /// already holds (the backward kernels that write the gradients, say): a pipeline that
    /// keeps one pass open saves a pass per step. The step count advances now; the same
    /// bound of [`SCALAR_SLOTS`] steps between two submits holds. Inside one pass wgpu
    /// orders each dispatch after an earlier one that wrote its buffers; tensors in separate
    /// buffers cost fewer barriers through [`record`](Self::record), which gives each step a
    /// pass. Refused with update tracking on (it copies parameters between passes).
    /// wgpu validates a pass when it ends: errors of the pass surface where the caller ends
    /// it, under the caller's error handling. As with [`record`](Self::record), every pass
    /// recorded into must be submitted, in order.
    pub fn record_in_pass(&mut self, pass: &mut wgpu::ComputePass<'_>, steps: u32) -> Result<()> {
        engine::record_in_pass(self, pass, steps)
    }

    /// Queues the scalars of steps `self.step + 1 ..= self.step + k` into the step table and
    /// records their dispatches (see [`engine::encode_passes`] for the passes).
    fn encode_steps(&mut self, encoder: &mut wgpu::CommandEncoder, k: u32) {
        self.write_scalars(k);
        let one_buffer = self.param_buffer.is_some();
        engine::encode_passes(encoder, k, one_buffer, &[self.tracked()], |pass, j| self.record_step(pass, j));
    }

    /// Queues the scalars of the next `k` steps into the step table.
    pub(crate) fn write_scalars(&mut self, k: u32) {
        let blocks = &self.prepared.0;
        self.steps.write(&self.ctx, self.step + 1, k, |j| blocks[j as usize]);
    }

    /// Computes the scalars of the next `k` steps on a copy of the configuration, each
    /// learning rate the schedule gives checked as `set_lr` checks one: an invalid one is an
    /// error before anything is written or recorded, and the optimizer's own learning rate
    /// moves only when the steps are recorded ([`advance`](Self::advance)).
    pub(crate) fn prepare(&mut self, k: u32) -> Result<()> {
        if self.eval_mode {
            return Err(crate::train_mode::refuse_step(self.optimizer.name()));
        }
        if self.step + u64::from(k) > MAX_STEP {
            return Err(Error::OverLimit(format!(
                "{k} steps after step {} pass the GPU's u32 step counter: an optimizer on the GPU takes at \
                 most {MAX_STEP} steps",
                self.step
            )));
        }
        // The buffers of the last call, reused; a copy of the configuration only where a
        // schedule moves the learning rate (on the copy, and on the optimizer only once the
        // steps are recorded).
        let (mut blocks, mut before) =
            (std::mem::take(&mut self.prepared.0), std::mem::take(&mut self.prepared_before));
        blocks.clear();
        before.clear();
        let name = self.optimizer.name();
        let mut probe = self.schedule.as_ref().map(|_| self.optimizer.clone_box());
        for j in 0..k {
            let t = self.step + 1 + u64::from(j);
            let o: &dyn Optimizer = match (&mut probe, &self.schedule) {
                (Some(p), Some((schedule, base, origin))) => {
                    before.push(Scheduled::of(&**p));
                    Scheduled::at(&**schedule, *base, t - 1 - origin).put_checked(&mut **p).map_err(|e| {
                        Error::InvalidHyperParameter {
                            optimizer: name,
                            message: format!("the schedule's learning rate for step {t} is refused: {e}"),
                        }
                    })?;
                    &**p
                }
                _ => {
                    before.push(Scheduled::of(&*self.optimizer));
                    &*self.optimizer
                }
            };
            blocks.push(o.scalars(t));
        }
        let after = Scheduled::of(probe.as_deref().unwrap_or(&*self.optimizer));
        self.prepared = (blocks, after);
        self.prepared_before = before;
        Ok(())
    }

    /// The learning rate (and cycled momentum) of the last of `taken` steps: the current one
    /// if every recorded step was taken, else the schedule's for the last taken one (its base
    /// before the first).
    fn lr_after(&self, taken: u64) -> Scheduled {
        if taken == self.step {
            // Every recorded step was taken: the learning rate is the current one (which a
            // reconfiguration may have set since).
            return Scheduled::of(&*self.optimizer);
        }
        if taken < self.step && self.step - taken <= u64::from(SCALAR_SLOTS) {
            // As before the first step not taken, as the CPU keeps it.
            return self.lr_before[((taken + 1) % u64::from(SCALAR_SLOTS)) as usize];
        }
        match &self.schedule {
            Some((schedule, base, origin)) if taken > *origin => Scheduled::at(&**schedule, *base, taken - 1 - origin),
            Some((_, base, _)) => Scheduled { lr: *base, momentum: None },
            None => Scheduled::of(&*self.optimizer),
        }
    }

    /// Drives the learning rate by `schedule` from the next step on: step `k` (0-based from
    /// now) uses `schedule.lr(base, k)`, `base` being the current learning rate (torch's
    /// `initial_lr`). Evaluated for every recorded step, K per submit included; `None`
    /// keeps the learning rate where the schedule left it. A schedule whose first learning
    /// rate the optimizer refuses is an error, and nothing changes.
    pub fn set_schedule(&mut self, schedule: Option<Box<dyn Schedule>>) -> Result<()> {
        self.schedule = crate::schedule::attach(&*self.optimizer, self.step, schedule)?;
        Ok(())
    }

    /// Puts an attached schedule in place (one checked by [`crate::schedule::attach`]).
    pub(crate) fn put_schedule(&mut self, slot: crate::schedule::ScheduleSlot) {
        self.schedule = slot;
    }

    /// Records step `j` of the steps being recorded: every sub-range's dispatches, reading
    /// the scalars of the GPU's step counter + 1, the last one (or a dispatch after them)
    /// writing the next count.
    pub(crate) fn record_step(&self, pass: &mut wgpu::ComputePass<'_>, j: u32) {
        let (parity, stamp) = (self.steps.parity(j), self.steps.stamp_offset(j));
        let step_group = &self.step_groups.step[parity];
        let Some(pipelines) = &self.pipelines else {
            for f in &self.factored {
                f.record_stages(pass, parity, stamp);
            }
            self.record_advance(pass, parity, stamp);
            return;
        };
        match &self.reduction {
            Some(r) => {
                pass.set_bind_group(0, step_group, &[stamp]);
                for stage in self.optimizer.kernel().stages {
                    let reducing = matches!(stage, Stage::Reduce(_) | Stage::ReduceMax(_));
                    for (i, (plan, group)) in self.plans.iter().zip(&self.tensor_groups).enumerate() {
                        pass.set_bind_group(1, group, &[]);
                        pass.set_bind_group(2, &r.group, &[r.stride * i as u32]);
                        match (&pipelines.reduce, &pipelines.reduce_blocks) {
                            (_, Some(blocks)) if reducing => {
                                r.record_blocks(pass, i, blocks);
                            }
                            (Some((vec4, tail)), _) if reducing => {
                                plan.record_with(pass, &mut engine::PassState::default(), vec4, tail)
                            }
                            _ => plan.record_with(
                                pass,
                                &mut engine::PassState::default(),
                                &pipelines.vec4,
                                &pipelines.tail,
                            ),
                        }
                    }
                    if reducing && pipelines.reduce_blocks.is_none() {
                        r.record_finalize(pass);
                        pass.set_bind_group(0, step_group, &[stamp]);
                    }
                }
                self.record_advance(pass, parity, stamp);
            }
            None => {
                // wgpu redoes its binding work at every set_pipeline and set_bind_group, the
                // same object or not: each is set only where it changes within the step (the
                // group 0 of the step kernels only if one runs before the advancing dispatch).
                let last = self.plans.len() - 1;
                let mut set = engine::PassState::default();
                for (i, (plan, group)) in self.plans.iter().zip(&self.tensor_groups).enumerate() {
                    pass.set_bind_group(1, group, &[]);
                    match &pipelines.advancing {
                        Some(advancing) if i == last => {
                            let groups = [(step_group, stamp), (&self.step_groups.advancing[parity], stamp)];
                            plan.record_advancing(pass, &mut set, pipelines, advancing, groups)
                        }
                        _ => {
                            set.group0(pass, step_group, stamp);
                            plan.record(pass, &mut set, pipelines)
                        }
                    }
                }
                if pipelines.advancing.is_none() {
                    self.record_advance(pass, parity, stamp);
                }
            }
        }
    }

    /// Records the step counter's advance as a dispatch of its own, after a step's.
    fn record_advance(&self, pass: &mut wgpu::ComputePass<'_>, parity: usize, stamp: u32) {
        pass.set_pipeline(&self.advance);
        pass.set_bind_group(0, &self.step_groups.advancing[parity], &[stamp]);
        pass.dispatch_workgroups(1, 1, 1);
    }

    /// Saves the state (every state tensor, the step count, the learning rate, the
    /// configuration and the schedule's position) to a safetensors checkpoint, atomically
    /// (waits for the GPU). Parameters are not included, as in torch's optimizer `state_dict`.
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let snapshot = Snapshot { groups: vec![self.snapshot(self.shapes.clone())?], scaler: None };
        snapshot.save(path.as_ref())
    }

    /// Loads a checkpoint written by [`save`](Self::save) for the same configuration and
    /// size: state tensors, the step count (on the GPU too), the learning rate and the
    /// schedule's position (set the same schedule before loading). Everything is checked
    /// before anything is written, so a bad file leaves the optimizer as it was.
    pub fn load(&mut self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let path = path.as_ref();
        let snapshot = Snapshot::load(path)?;
        if snapshot.scaler.is_some() {
            let message = "the checkpoint holds a loss scaler: load it into ParamGroups (or a CpuOptimizer) with one";
            return Err(crate::checkpoint::bad(path, message));
        }
        let restore = self.check_restore(path, snapshot.single(path)?, &self.shapes.clone())?;
        self.restore(restore)
    }

    /// This optimizer's state as one checkpoint group over tensors of `shapes`.
    pub(crate) fn snapshot(&self, shapes: Vec<Vec<usize>>) -> Result<GroupSnapshot> {
        if self.optimizer.train_mode_weight(false).is_some() && !self.eval_mode {
            return Err(crate::train_mode::refuse_save(self.optimizer.name()));
        }
        let state = self.state().map(|(slot, t)| Ok((slot, t.read_host(&self.ctx)?))).collect::<Result<Vec<_>>>()?;
        // The steps the GPU took: a step skipped for a non-finite gradient is no step, as
        // torch's `state["step"]` under GradScaler.
        let taken = self.read_gpu_step()?;
        // The learning rate of the steps taken, as a run that never skipped would hold it.
        let mut at = self.optimizer.clone_box();
        self.lr_after(taken).put(&mut *at);
        Ok(GroupSnapshot::of(&*at, taken, shapes, state, &self.schedule, self.precision))
    }

    /// Checks that `group` fits this optimizer over tensors of `shapes`; changes nothing.
    pub(crate) fn check_restore<'a>(
        &self,
        path: &std::path::Path,
        group: &'a GroupSnapshot,
        shapes: &[Vec<usize>],
    ) -> Result<Restore<'a>> {
        let restore = group.restore(path, &*self.optimizer, shapes, &self.schedule, self.precision)?;
        if restore.step > MAX_STEP {
            return Err(crate::checkpoint::bad(
                path,
                format!("step {} exceeds the GPU's u32 step counter (at most {MAX_STEP})", restore.step),
            ));
        }
        Ok(restore)
    }

    /// Writes a checked checkpoint group into the state, the step counters and the schedule.
    pub(crate) fn restore(&mut self, restore: Restore<'_>) -> Result<()> {
        // A schedule-free checkpoint is saved in eval mode, and loads into it.
        self.eval_mode = self.optimizer.train_mode_weight(false).is_some();
        for (t, data) in self.state.iter().zip(restore.state) {
            if let (Some(t), Some(data)) = (t, data) {
                t.write_host(&self.ctx, data)?;
            }
        }
        if let (Some(m), Some(data)) = (&self.master, restore.master) {
            m.write_host(&self.ctx, data)?;
        }
        let counter = restore.step as u32; // checked in check_restore
        self.steps.set_counter(&self.ctx, counter)?;
        self.step = restore.step;
        self.optimizer = restore.optimizer;
        crate::checkpoint::resume_schedule(&mut self.schedule, restore.schedule);
        Ok(())
    }

    /// Override constants of the compiled variant: the configuration's, and whether the
    /// kernels read a gradient control.
    fn variant(o: &dyn Optimizer, controlled: bool) -> Vec<(&'static str, f64)> {
        let mut c = o.constants();
        c.push(("CONTROLLED", crate::optim::flag(controlled)));
        c
    }

    /// Compiles the kernels of configuration `next` reading gradient control `control`
    /// (`None`: the optimizer's own neutral one) and binds it; changes nothing on error.
    fn rebuild(&mut self, next: &dyn Optimizer, control: Option<&wgpu::Buffer>) -> Result<()> {
        let ctx = self.ctx.clone();
        let constants = Self::variant(next, control.is_some());
        let buffer = control.unwrap_or(&self.steps.control);
        let step_groups = self.steps.bind(&ctx, buffer)?;
        if !self.factored.is_empty() {
            let bound = Bound { steps: &self.steps, control: buffer };
            let rebuilt =
                self.factored.iter().map(|f| f.rebuilt(&ctx, &constants, bound)).collect::<Result<Vec<_>>>()?;
            for (f, r) in self.factored.iter_mut().zip(rebuilt) {
                f.install(r);
            }
            self.advance = self.factored[0].advance_pipeline().clone();
            self.step_groups = step_groups;
            return Ok(());
        }
        let formats = formats(next, &self.params, self.precision);
        let pipelines = ctx.engine().pipelines(&ctx, next.kernel(), &formats, &constants, &self.plans)?;
        self.advance = pipelines.advance.clone();
        (self.pipelines, self.step_groups) = (Some(pipelines), step_groups);
        Ok(())
    }

    /// Makes the kernels read `control` (see [`crate::clip::GradControl`]), or stop reading one.
    pub(crate) fn attach_control(&mut self, control: Option<wgpu::Buffer>) -> Result<()> {
        let optimizer = self.optimizer.clone();
        self.rebuild(&*optimizer, control.as_ref())?;
        self.control = control;
        Ok(())
    }

    /// Turns update tracking on or off. With it on, every submit (or `record`) copies the
    /// parameters before its last step, so [`health`](Self::health) can report that step's
    /// largest update; it costs a copy of the parameters (4 bytes per parameter of memory and
    /// a read and a write per tracked step). The parameters' buffers must allow COPY_SRC.
    pub fn track_updates(&mut self, on: bool) -> Result<()> {
        self.before = if on { Some(crate::monitor::tracking_copy(&self.ctx, &self.params)?) } else { None };
        self.health = None;
        Ok(())
    }

    /// The one physical buffer all its parameters lie in, if there is one.
    pub(crate) fn param_buffer(&self) -> Option<&wgpu::Buffer> {
        self.param_buffer.as_ref()
    }

    /// The parameters as they were before the last recorded step, with update tracking on.
    pub(crate) fn tracked(&self) -> Option<(&GpuTensor, &GpuTensor)> {
        self.before.as_ref().map(|b| (&self.params, b))
    }

    /// The tensors a health check covers, under `group`.
    pub(crate) fn checked(&self, group: usize) -> Vec<Checked<'_>> {
        let mut all = vec![(group, "params", &self.params, self.before.as_ref())];
        // 8-bit state is codes and absmax, not f32 values: its health shows in the parameters.
        let f32_values = self.state().filter(|(_, t)| t.format() != crate::ElementFormat::Blockwise8);
        all.extend(f32_values.map(|(slot, t)| (group, slot.torch_name, t, None)));
        all
    }

    /// Checks the parameters and every state tensor on the GPU, after all submitted work:
    /// NaN and infinity counts, the largest finite magnitude, and with
    /// [`track_updates`](Self::track_updates) the last step's largest update (waits for the
    /// GPU to read 16 bytes per sub-range back).
    pub fn health(&mut self) -> Result<Vec<TensorHealth>> {
        let check = match self.health.take() {
            Some(h) => h,
            None => HealthCheck::new(&self.ctx, &self.checked(0))?,
        };
        let found = check.run(&self.ctx);
        self.health = Some(check);
        found
    }

    /// The step counter on the GPU (waits for the GPU): the steps the kernels have taken.
    pub fn read_gpu_step(&self) -> Result<u64> {
        self.steps.read_counter(&self.ctx)
    }

    /// Sets the host's step count to the GPU's (waits for the GPU) and returns it.
    ///
    /// They differ only when steps were not taken: the host counts recorded steps, the GPU
    /// taken ones. The step table holds the scalars of the [`SCALAR_SLOTS`] steps up to the
    /// host's count, so after that many skips since the last sync — or when more than
    /// [`SCALAR_SLOTS`] steps were recorded between two submits — a step finds its scalars
    /// overwritten: it is then not taken (never run with another step's scalars), and this
    /// reports [`Error::StaleSteps`] once, after which steps run again. Syncing changes no result,
    /// the learning-rate schedule included. [`ParamGroups::run`](crate::ParamGroups::run)
    /// syncs by itself; call it when you record steps into your own encoders with
    /// skip-on-inf, every few hundred steps.
    pub fn sync(&mut self) -> Result<u64> {
        let (taken, stale) = self.steps.read_counter_and_stale(&self.ctx)?;
        let after = self.lr_after(taken);
        self.step = taken;
        after.put(&mut *self.optimizer);
        if stale {
            self.steps.set_counter(&self.ctx, taken as u32)?;
            return Err(Error::StaleSteps { taken });
        }
        Ok(taken)
    }

    /// Counts `k` recorded steps: the step count and the learning rate they end at.
    pub(crate) fn advance(&mut self, k: u32) {
        for (j, &before) in self.prepared_before.iter().take(k as usize).enumerate() {
            let t = self.step + 1 + j as u64;
            self.lr_before[(t % u64::from(SCALAR_SLOTS)) as usize] = before;
        }
        self.step += u64::from(k);
        self.steps.recorded(k);
        if k > 0 {
            self.prepared.1.put(&mut *self.optimizer);
        }
    }

    /// Replaces the configuration between steps: any hyper-parameter or flag of the same
    /// family that keeps the same state tensors (so not turning AMSGrad on, say). Nothing
    /// is reallocated; a new variant is compiled once and cached.
    pub fn reconfigure(&mut self, optimizer: impl Into<Box<dyn Optimizer>>) -> Result<()> {
        let next = optimizer.into();
        crate::optim::check_takeover(&*self.optimizer, &*next)?;
        let control = self.control.clone();
        self.rebuild(&*next, control.as_ref())?;
        self.optimizer = next;
        Ok(())
    }

    /// The context the optimizer runs in.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
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

    /// Each parameter tensor's shape.
    pub fn shapes(&self) -> &[Vec<usize>] {
        &self.shapes
    }

    /// The parameters on the GPU.
    pub fn params(&self) -> &GpuTensor {
        &self.params
    }

    /// The gradients the next step reads.
    pub fn grads(&self) -> &GpuTensor {
        &self.grads
    }

    /// The state tensors this configuration uses, with their names, and the master weights
    /// (`master_param`) where the step keeps them.
    pub fn state(&self) -> impl Iterator<Item = (&'static StateSlot, &GpuTensor)> {
        let kept = self.optimizer.kernel().state.iter().zip(&self.state);
        kept.filter_map(|(slot, t)| Some((slot, t.as_ref()?))).chain(self.master.as_ref().map(|m| (&MASTER, m)))
    }

    /// One state tensor by role (`m`) or torch name (`exp_avg`).
    pub fn state_tensor(&self, name: &str) -> Option<&GpuTensor> {
        self.state().find(|(s, _)| s.role == name || s.torch_name == name).map(|(_, t)| t)
    }

    /// Reads the parameters back (waits for the GPU).
    pub fn read_params(&self) -> Result<Array1<f32>> {
        self.params.to_array(&self.ctx)
    }

    /// Reads one state tensor back by role or torch name (waits for the GPU): 8-bit
    /// blockwise state dequantized.
    pub fn read_state(&self, name: &str) -> Result<Array1<f32>> {
        match self.state().find(|(s, _)| s.role == name || s.torch_name == name) {
            Some((slot, t)) if t.format() == crate::ElementFormat::Blockwise8 => {
                t.read_blockwise(&self.ctx, slot.signed).map(Array1::from)
            }
            Some((_, t)) => t.to_array(&self.ctx),
            None => Err(Error::UnknownState {
                optimizer: self.optimizer.name(),
                name: name.to_string(),
                available: self.state().map(|(s, _)| s.torch_name).collect(),
            }),
        }
    }
}

impl engine::Stepper for GpuOptimizer {
    fn context(&self) -> GpuContext {
        self.ctx.clone()
    }
    fn prepare(&mut self, k: u32) -> Result<()> {
        GpuOptimizer::prepare(self, k)
    }
    fn encode(&mut self, encoder: &mut wgpu::CommandEncoder, k: u32) {
        self.encode_steps(encoder, k)
    }
    fn encode_in_pass(&mut self, pass: &mut wgpu::ComputePass<'_>, k: u32) {
        self.write_scalars(k);
        for j in 0..k {
            self.record_step(pass, j);
        }
    }
    fn tracks_updates(&self) -> bool {
        self.before.is_some()
    }
    fn taken(&mut self, k: u32) {
        self.advance(k);
    }
}

/// The sub-range uniforms of stochastic rounding and 8-bit state, one window per sub-range
/// of `params` (at the device's uniform offset alignment): the index of its first element in
/// the optimizer (low, high word), the seed (low, high word), and whether its 8-bit state is
/// quantized. Returns the buffer and the windows' stride.
fn sub_ranges(ctx: &GpuContext, params: &GpuTensor, seed: u64, quantized: &[bool]) -> Result<(wgpu::Buffer, u64)> {
    let align = u64::from(ctx.limits().min_uniform_buffer_offset_alignment);
    let stride = engine::SUB_RANGE_BYTES.next_multiple_of(align);
    let mut bytes = Vec::new();
    let mut first = 0u64;
    for (s, &q) in params.segments().iter().zip(quantized) {
        let key = [first as u32, (first >> 32) as u32, seed as u32, (seed >> 32) as u32, u32::from(q), 0, 0, 0];
        bytes.extend_from_slice(bytemuck::cast_slice(&key));
        bytes.resize(bytes.len().next_multiple_of(stride as usize), 0);
        first += s.len as u64;
    }
    ctx.scoped("writing the sub-range uniforms", || {
        let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgpu-optim sub-ranges"),
            size: bytes.len() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        ctx.queue().write_buffer(&buffer, 0, &bytes);
        (buffer, stride)
    })
}

/// What a step records beside the step table: the state, and the pipelines, dispatch plans
/// and bind groups of an element-wise or staged step, or a shaped step's per tensor.
struct Parts {
    state: Vec<Option<GpuTensor>>,
    master: Option<GpuTensor>,
    pipelines: Option<Pipelines>,
    advance: wgpu::ComputePipeline,
    factored: Vec<ShapedStep>,
    plans: Vec<SegmentPlan>,
    tensor_groups: Vec<wgpu::BindGroup>,
    reduction: Option<Reduction>,
}

impl Parts {
    /// State laid out like the parameters, sub-range for sub-range, each slot in its format;
    /// one bind group per sub-range; a staged step's reduction.
    fn elementwise(
        ctx: &GpuContext,
        optimizer: &dyn Optimizer,
        (params, grads): (&GpuTensor, &GpuTensor),
        segment_tensor: &[u32],
        precision: Precision,
    ) -> Result<Self> {
        let kernel = optimizer.kernel();
        let lens = params.segment_lens();
        // The master weights start as the parameters' values (exact: 16 bits widen to f32).
        let master = match precision {
            Precision::MasterWeights => {
                let master = GpuTensor::zeros_like(ctx, crate::ElementFormat::F32, params)?;
                master.write(ctx, &params.read(ctx)?)?;
                Some(master)
            }
            _ => None,
        };
        let formats = formats(optimizer, params, precision);
        // 8-bit state: which sub-ranges' tensors are large enough to keep it (else f32). Its
        // tensors keep their own sub-ranges (`segment_tensor` maps them); others may be merged.
        let quantized: Vec<bool> = if formats.is_blockwise() {
            let mut tensor_lens = vec![0usize; segment_tensor.iter().max().map_or(0, |&t| t as usize + 1)];
            for (&t, s) in segment_tensor.iter().zip(params.segments()) {
                tensor_lens[t as usize] += s.len;
            }
            segment_tensor.iter().map(|&t| crate::quant::is_quantized(tensor_lens[t as usize])).collect()
        } else {
            vec![false; params.segments().len()]
        };
        let keys = match (formats.has_sub_range(), precision) {
            (false, _) => None,
            (true, Precision::StochasticRounding { seed }) => Some(sub_ranges(ctx, params, seed, &quantized)?),
            (true, _) => Some(sub_ranges(ctx, params, 0, &quantized)?),
        };
        let state = (0..kernel.state.len())
            .map(|i| {
                let init = optimizer.state_init(i);
                optimizer
                    .uses_state(i)
                    .then(|| match optimizer.state_format(i) {
                        crate::ElementFormat::Blockwise8 => {
                            GpuTensor::blockwise_like(ctx, params, &quantized, init, kernel.state[i].signed)
                        }
                        f => GpuTensor::filled_like(ctx, f, params, init),
                    })
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        // A staged family's reduction slots follow its plans' grids: every sub-range at the
        // tuning's items per invocation.
        let plans = params
            .segments()
            .iter()
            .map(|s| {
                if formats.is_blockwise() {
                    SegmentPlan::blockwise(s.len, ctx.tuning())
                } else {
                    SegmentPlan::new(s.len, ctx.tuning(), !kernel.is_staged())
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let constants = GpuOptimizer::variant(optimizer, false);
        let pipelines = ctx.engine().pipelines(ctx, kernel, &formats, &constants, &plans)?;
        let reduction = if kernel.is_staged() {
            Some(Reduction::new(ctx, kernel.stages, &plans, &lens, segment_tensor)?)
        } else {
            None
        };
        let layout = ctx.engine().tensor_layout(kernel, &formats)?;
        let tensor_groups = ctx.scoped("binding tensors", || {
            // Unused state slots (v_max without AMSGrad, ...) are bound to the sub-range of a
            // slot in use, which their variant never reads or writes, or where none is in use
            // to a small placeholder per parameter buffer: one buffer shared by separate
            // tensors' dispatches would be a written buffer in common (a barrier between each
            // two), and a buffer more per tensor costs host time at every submit.
            let segments = params.segments();
            let runs = params.buffer_runs();
            let in_use = state.iter().flatten().next();
            let placeholders: Vec<wgpu::Buffer> = match in_use {
                Some(_) => Vec::new(),
                None => (0..=runs.last().copied().unwrap_or(0))
                    .map(|_| {
                        ctx.device().create_buffer(&wgpu::BufferDescriptor {
                            label: Some("wgpu-optim unused state"),
                            size: 16,
                            usage: wgpu::BufferUsages::STORAGE,
                            mapped_at_creation: false,
                        })
                    })
                    .collect(),
            };
            (0..segments.len())
                .map(|i| {
                    let mut resources = vec![segments[i].binding(), grads.segments()[i].binding()];
                    for s in &state {
                        resources.push(match (s, in_use) {
                            (Some(t), _) | (None, Some(t)) => t.segments()[i].binding(),
                            (None, None) => placeholders[runs[i]].as_entire_binding(),
                        });
                    }
                    resources.extend(master.as_ref().map(|m| m.segments()[i].binding()));
                    if let Some((buffer, stride)) = &keys {
                        resources.push(wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer,
                            offset: i as u64 * stride,
                            size: wgpu::BufferSize::new(engine::SUB_RANGE_BYTES),
                        }));
                        resources.push(ctx.engine().qmaps.as_entire_binding());
                    }
                    engine::bind_in_order(ctx, "wgpu-optim tensors", layout, resources)
                })
                .collect::<Vec<_>>()
        })?;
        let advance = pipelines.advance.clone();
        Ok(Parts {
            state,
            master,
            pipelines: Some(pipelines),
            advance,
            factored: Vec::new(),
            plans,
            tensor_groups,
            reduction,
        })
    }

    /// A shaped step: each tensor's own buffers and entry points over one step table, the
    /// state of each slot the tensors' parts end to end.
    /// `param_parts` and `grad_parts` are the group's tensors, one by one.
    fn shaped(
        ctx: &GpuContext,
        optimizer: &dyn Optimizer,
        (param_parts, grad_parts): (&[GpuTensor], &[GpuTensor]),
        shapes: &[Vec<usize>],
        steps: &StepTable,
    ) -> Result<Self> {
        if param_parts.len() != shapes.len() {
            return Err(Error::LengthMismatch {
                what: "shapes (one per tensor)",
                expected: param_parts.len(),
                actual: shapes.len(),
            });
        }
        let constants = GpuOptimizer::variant(optimizer, false);
        let bound = Bound { steps, control: &steps.control };
        let mut factored = Vec::with_capacity(shapes.len());
        let mut parts: Vec<Vec<GpuTensor>> = vec![Vec::new(); optimizer.kernel().state.len()];
        for ((p, g), shape) in param_parts.iter().zip(grad_parts).zip(shapes) {
            let (step, state) = ShapedStep::new(ctx, optimizer, (p, g), shape, bound, &constants)?;
            factored.push(step);
            for (all, t) in parts.iter_mut().zip(state) {
                all.extend(t);
            }
        }
        // Each slot over the tensors that keep it, in tensor order (what checkpoints expect).
        let state = parts
            .iter()
            .map(|p| (!p.is_empty()).then(|| GpuTensor::concat(&p.iter().collect::<Vec<_>>())).transpose())
            .collect::<Result<Vec<_>>>()?;
        let advance = match factored.first() {
            Some(f) => f.advance_pipeline().clone(),
            None => return Err(Error::Empty { what: "a shaped step's tensors" }),
        };
        Ok(Parts {
            state,
            master: None,
            pipelines: None,
            advance,
            factored,
            plans: Vec::new(),
            tensor_groups: Vec::new(),
            reduction: None,
        })
    }
}
