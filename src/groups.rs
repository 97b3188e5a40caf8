//! Parameter groups, as torch's `param_groups`: several tensors per group, a configuration
//! per group, every group's step recorded together.

use crate::checkpoint::{ScalerState, Snapshot};
use crate::clip::{GradControl, NormReducer};
use crate::engine;
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::gpu_optimizer::{GpuOptimizer, SCALAR_SLOTS};
use crate::monitor::{HealthCheck, TensorHealth};
use crate::optim::Optimizer;
use crate::precision::Precision;
use crate::tensor::GpuTensor;

/// One group: the tensors it updates (parameters and their gradients, in the same order)
/// and its configuration.
pub struct ParamGroup<'a> {
    /// The configuration (and its hyper-parameters) for every tensor of the group.
    pub optimizer: Box<dyn Optimizer>,
    /// Parameter tensors: separate buffers, or slices of one arena buffer.
    pub params: Vec<&'a GpuTensor>,
    /// Their gradients, laid out like them.
    pub grads: Vec<&'a GpuTensor>,
    /// Each tensor's shape (row-major, as torch's), which a shaped step such as Adafactor's
    /// follows; empty: every tensor flat.
    pub shapes: Vec<Vec<usize>>,
    /// How a step stores the group's parameters (16-bit ones: stochastic rounding or f32
    /// master weights; see [`Precision`]). Give each group under stochastic rounding its own
    /// seed.
    pub precision: Precision,
}

impl<'a> ParamGroup<'a> {
    /// A group of flat tensors.
    pub fn new(
        optimizer: impl Into<Box<dyn Optimizer>>,
        params: Vec<&'a GpuTensor>,
        grads: Vec<&'a GpuTensor>,
    ) -> Self {
        ParamGroup { optimizer: optimizer.into(), params, grads, shapes: Vec::new(), precision: Precision::default() }
    }

    /// The group's parameters stored `precision`'s way.
    pub fn with_precision(self, precision: Precision) -> Self {
        ParamGroup { precision, ..self }
    }

    /// The tensors' shapes, one per tensor.
    pub fn with_shapes(self, shapes: Vec<Vec<usize>>) -> Self {
        ParamGroup { shapes, ..self }
    }

    /// Each tensor's shape: as given, or flat; checked against the tensors' lengths.
    fn checked_shapes(&self) -> Result<Vec<Vec<usize>>> {
        if self.shapes.is_empty() {
            return Ok(self.params.iter().map(|t| vec![t.len()]).collect());
        }
        if self.shapes.len() != self.params.len() {
            return Err(Error::LengthMismatch {
                what: "shapes (one per tensor of the group)",
                expected: self.params.len(),
                actual: self.shapes.len(),
            });
        }
        for (shape, t) in self.shapes.iter().zip(&self.params) {
            crate::optim::check_shape("a tensor of the group (shape)", shape, t.len())?;
        }
        Ok(self.shapes.clone())
    }
}

/// Optimizers over groups of tensors, stepped together: every group's dispatches of a step
/// in one compute pass, one submit per `run` of up to [`SCALAR_SLOTS`] steps.
///
/// A group's tensors are bound as one logical tensor ([`GpuTensor::concat`]): tensors in
/// separate buffers cost one dispatch per tensor (per sub-range), each with state in
/// buffers of its own, so that no two of a step's dispatches write one buffer and the GPU
/// runs them without a barrier between them; tensors that lie end to end in one buffer (an
/// arena's views, handed over one by one or as one slice) cost one dispatch per sub-range
/// of the run. Steps over one parameter buffer share one pass; over several, each step has
/// a pass of its own (see the README's table of barriers per step).
pub struct ParamGroups {
    ctx: GpuContext,
    groups: Vec<GpuOptimizer>,
    /// Every group's gradients, as one tensor, for the gradient control.
    grads: GpuTensor,
    control: Option<(NormReducer, GradControl)>,
    health: Option<HealthCheck>,
    /// Each group's tensor shapes, for checkpoints (one tensor per parameter, as torch).
    shapes: Vec<Vec<Vec<usize>>>,
    /// Steps recorded since the host's step count was last synced with the GPU's.
    unsynced: u32,
}

impl ParamGroups {
    /// Builds one optimizer per group, with state for every tensor.
    pub fn new(ctx: &GpuContext, groups: Vec<ParamGroup<'_>>) -> Result<Self> {
        if groups.is_empty() {
            return Err(Error::Empty { what: "param groups" });
        }
        if groups.iter().any(|g| g.params.is_empty()) {
            return Err(Error::Empty { what: "a param group's tensors (give each group at least one)" });
        }
        let tensors: Vec<(usize, &ParamGroup<'_>)> = groups.iter().enumerate().collect();
        check_groups_disjoint(&tensors)?;
        let all_grads: Vec<GpuTensor> = groups.iter().flat_map(|g| g.grads.iter().map(|t| (*t).clone())).collect();
        let grads = merged(ctx, GpuTensor::concat(&all_grads.iter().collect::<Vec<_>>())?);
        let shapes = groups.iter().map(ParamGroup::checked_shapes).collect::<Result<_>>()?;
        let groups = groups.into_iter().map(|g| Self::build(ctx, g)).collect::<Result<Vec<_>>>()?;
        Ok(ParamGroups { ctx: ctx.clone(), groups, grads, control: None, health: None, shapes, unsynced: 0 })
    }

    /// One group's optimizer over its tensors (each tensor's sub-ranges kept, for per-tensor
    /// reductions).
    fn build(ctx: &GpuContext, g: ParamGroup<'_>) -> Result<GpuOptimizer> {
        if g.params.is_empty() {
            return Err(Error::Empty { what: "a param group's tensors (give each group at least one)" });
        }
        let shapes = g.checked_shapes()?;
        if g.params.len() != g.grads.len() {
            return Err(Error::LengthMismatch {
                what: "grads (tensors in the group)",
                expected: g.params.len(),
                actual: g.grads.len(),
            });
        }
        for (p, q) in g.params.iter().zip(&g.grads) {
            if p.segment_lens() != q.segment_lens() {
                return Err(Error::LayoutMismatch {
                    what: "a gradient of the group",
                    expected: p.segment_lens(),
                    actual: q.segment_lens(),
                });
            }
        }
        let segment_tensor =
            g.params.iter().enumerate().flat_map(|(t, p)| std::iter::repeat_n(t as u32, p.segments().len())).collect();
        GpuOptimizer::from_parts(
            ctx,
            g.optimizer,
            GpuTensor::concat(&g.params)?,
            GpuTensor::concat(&g.grads)?,
            segment_tensor,
            shapes,
            g.precision,
        )
    }

    /// Adds a group, as torch's `optimizer.add_param_group`: its tensors get fresh state and
    /// their own step count from 0 (torch's per-parameter `step`), and the gradient control
    /// (if any) then covers their gradients too. The group and the new reduction are built
    /// before anything changes; an error leaves the groups as they were.
    pub fn add_param_group(&mut self, group: ParamGroup<'_>) -> Result<()> {
        // The new tensors against every group's (as torch: a parameter in two groups is an error).
        let mut bound: Vec<crate::tensor::BoundTensor<'_>> = Vec::new();
        for (g, o) in self.groups.iter().enumerate() {
            bound.push((format!("group {g}'s parameters"), o.params(), true));
            bound.push((format!("group {g}'s gradients"), o.grads(), false));
        }
        let added = self.groups.len();
        bound.extend(group_bindings(added, &group));
        crate::tensor::check_disjoint(&bound)?;
        let shapes = group.checked_shapes()?;
        let mut added = Self::build(&self.ctx, group)?;
        let grads = merged(&self.ctx, GpuTensor::concat(&[&self.grads, added.grads()])?);
        if let Some((old, c)) = &self.control {
            let reducer = NormReducer::new(&self.ctx, &grads, *c)?;
            added.attach_control(Some(reducer.control.clone()))?;
            // Attaching rebuilds a pipeline and a bind group; should one fail, the groups
            // already moved go back to the old control.
            for i in 0..self.groups.len() {
                if let Err(e) = self.groups[i].attach_control(Some(reducer.control.clone())) {
                    for g in &mut self.groups[..i] {
                        g.attach_control(Some(old.control.clone()))?;
                    }
                    return Err(e);
                }
            }
            self.control = Some((reducer, *c));
        }
        self.groups.push(added);
        self.grads = grads;
        self.shapes.push(shapes);
        self.health = None;
        Ok(())
    }

    /// Parameter groups of optimizers that already exist, one group each, their state and
    /// step counts kept: how a lone [`GpuOptimizer`] gets gradient control (clipping, loss
    /// scaling, skip-on-inf), group checkpoints with the scaler, and one pass for several
    /// optimizers. All must run on one context's device (or contexts made from it by
    /// `with_tuning`).
    pub fn from_optimizers(optimizers: Vec<GpuOptimizer>) -> Result<Self> {
        let ctx = optimizers.first().ok_or(Error::Empty { what: "param groups" })?.context().clone();
        if !optimizers.iter().all(|o| o.context().same_device(&ctx)) {
            return Err(Error::ForeignDevice { what: "optimizers of different GpuContexts (devices)" });
        }
        let mut bound: Vec<crate::tensor::BoundTensor<'_>> = Vec::new();
        for (g, o) in optimizers.iter().enumerate() {
            bound.push((format!("optimizer {g}'s parameters"), o.params(), true));
            bound.push((format!("optimizer {g}'s gradients"), o.grads(), false));
        }
        crate::tensor::check_disjoint(&bound)?;
        let grads = GpuTensor::concat(&optimizers.iter().map(GpuOptimizer::grads).collect::<Vec<_>>())?;
        let shapes = optimizers.iter().map(|o| o.shapes().to_vec()).collect();
        Ok(ParamGroups { ctx, groups: optimizers, grads, control: None, health: None, shapes, unsynced: 0 })
    }

    /// Takes `steps` steps of every group on the gradients on the GPU, `SCALAR_SLOTS` steps
    /// per submit.
    pub fn run(&mut self, steps: u32) -> Result<()> {
        if self.control.is_none() {
            return engine::run(self, steps);
        }
        // Skip-on-inf leaves the host's step count ahead of the GPU's by the skipped steps;
        // syncing every half table keeps every step's scalars in the table.
        let mut left = steps;
        while left > 0 {
            let k = left.min(SCALAR_SLOTS / 2);
            engine::run(self, k)?;
            left -= k;
            if self.unsynced >= SCALAR_SLOTS / 2 {
                self.sync()?;
            }
        }
        Ok(())
    }

    /// Records `steps` steps of every group into the caller's encoder, after whatever the
    /// encoder already holds (the backward pass writing the gradients); see
    /// [`GpuOptimizer::record`].
    pub fn record(&mut self, encoder: &mut wgpu::CommandEncoder, steps: u32) -> Result<()> {
        engine::record(self, encoder, steps)
    }

    /// Records `steps` steps of every group into the caller's open compute pass (see
    /// [`GpuOptimizer::record_in_pass`]).
    pub fn record_in_pass(&mut self, pass: &mut wgpu::ComputePass<'_>, steps: u32) -> Result<()> {
        engine::record_in_pass(self, pass, steps)
    }

    fn encode_steps(&mut self, encoder: &mut wgpu::CommandEncoder, k: u32) {
        self.groups.iter_mut().for_each(|g| g.write_scalars(k));
        let tracked: Vec<_> = self.groups.iter().map(GpuOptimizer::tracked).collect();
        // One buffer for every group's parameters: all steps in one pass.
        let first = self.groups[0].param_buffer();
        let one_buffer = first.is_some() && self.groups.iter().all(|g| g.param_buffer() == first);
        engine::encode_passes(encoder, k, one_buffer, &tracked, |pass, j| self.record_step(pass, j));
    }

    /// Records step `j` of the steps being recorded: the gradient control's kernels, then
    /// every group's step.
    fn record_step(&self, pass: &mut wgpu::ComputePass<'_>, j: u32) {
        if let Some((reducer, _)) = &self.control {
            reducer.record(pass);
        }
        for g in &self.groups {
            g.record_step(pass, j);
        }
        if let Some((reducer, _)) = &self.control {
            reducer.record_after(pass);
        }
    }

    /// Turns update tracking on or off for every group (see
    /// [`GpuOptimizer::track_updates`]).
    pub fn track_updates(&mut self, on: bool) -> Result<()> {
        self.health = None;
        self.groups.iter_mut().try_for_each(|g| g.track_updates(on))
    }

    /// Checks every group's parameters and state tensors on the GPU in one pass (see
    /// [`GpuOptimizer::health`]); entries carry their group's index.
    pub fn health(&mut self) -> Result<Vec<TensorHealth>> {
        let check = match self.health.take() {
            Some(h) => h,
            None => {
                let checked: Vec<_> = self.groups.iter().enumerate().flat_map(|(i, g)| g.checked(i)).collect();
                HealthCheck::new(&self.ctx, &checked)?
            }
        };
        let found = check.run(&self.ctx);
        self.health = Some(check);
        found
    }

    /// The groups' optimizers, in order (their configuration, state and step count).
    pub fn groups(&self) -> &[GpuOptimizer] {
        &self.groups
    }

    /// Every group into train mode ([`GpuOptimizer::train`]: schedule-free groups move their
    /// parameters back to y; others have one mode).
    pub fn train(&mut self) -> Result<()> {
        self.groups.iter_mut().try_for_each(GpuOptimizer::train)
    }

    /// Every group into eval mode ([`GpuOptimizer::eval`]), before evaluating or saving.
    pub fn eval(&mut self) -> Result<()> {
        self.groups.iter_mut().try_for_each(GpuOptimizer::eval)
    }

    /// Turns on (or off, with `None`) fused gradient control for every group: the global
    /// norm over all their gradients, clipping, loss-scale unscaling and skip-on-inf, computed
    /// on the GPU ahead of each step (see [`GradControl`]). Changing the loss scale later is
    /// another call; nothing is rebuilt then.
    pub fn set_grad_control(&mut self, control: Option<GradControl>) -> Result<()> {
        if let Some(c) = &control {
            c.validate()?;
        }
        match (control, &self.control) {
            (Some(c), Some((reducer, _))) => {
                reducer.configure(&self.ctx, &self.grads, c)?;
                if let Some(entry) = self.control.as_mut() {
                    entry.1 = c;
                }
            }
            (Some(c), None) => {
                let reducer = NormReducer::new(&self.ctx, &self.grads, c)?;
                for g in &mut self.groups {
                    g.attach_control(Some(reducer.control.clone()))?;
                }
                self.control = Some((reducer, c));
            }
            (None, _) => {
                for g in &mut self.groups {
                    g.attach_control(None)?;
                }
                self.control = None;
            }
        }
        Ok(())
    }

    /// The last step's gradient control as the GPU computed it — `[1 / loss scale, clip
    /// coefficient, found_inf (1 or 0), total norm]` — or `None` without gradient control.
    /// Copy it into your own buffer to log the norm without a readback; this reads it back.
    pub fn read_grad_control(&self) -> Result<Option<[f32; 4]>> {
        let Some((reducer, _)) = &self.control else { return Ok(None) };
        let v = GpuTensor::from_buffer(&self.ctx, &reducer.control, 0, 4)?.read(&self.ctx)?;
        Ok(Some([v[0], v[1], v[2], v[3]]))
    }

    /// The GPU buffer holding the last step's `[1 / loss scale, clip coefficient, found_inf,
    /// total norm]` (f32, 16 bytes; the norm at byte 12), or `None` without gradient control.
    /// Copy it into a log buffer of your own inside the same encoder as the step
    /// (`copy_buffer_to_buffer`), and read the log when convenient: no readback per step.
    pub fn grad_control_buffer(&self) -> Option<&wgpu::Buffer> {
        self.control.as_ref().map(|(r, _)| &r.control)
    }

    /// The loss scale and its growth tracker as the GPU holds them (reads them back), or
    /// `None` without gradient control. A loss kernel can read
    /// [`loss_scale_buffer`](Self::loss_scale_buffer) instead.
    pub fn read_loss_scale(&self) -> Result<Option<(f32, u32)>> {
        let Some((reducer, _)) = &self.control else { return Ok(None) };
        let v = GpuTensor::from_buffer(&self.ctx, &reducer.scaler, 0, 2)?.read(&self.ctx)?;
        Ok(Some((v[0], v[1] as u32)))
    }

    /// The GPU buffer holding `[loss scale, growth tracker]` (f32), for a loss kernel to read.
    pub fn loss_scale_buffer(&self) -> Option<&wgpu::Buffer> {
        self.control.as_ref().map(|(r, _)| &r.scaler)
    }

    /// Sets every group's host step count to the GPU's (see [`GpuOptimizer::sync`]). `run`
    /// does this by itself every `SCALAR_SLOTS / 2` steps under gradient control; call it as
    /// often when you `record` steps with skip-on-inf. Returns the steps taken.
    pub fn sync(&mut self) -> Result<u64> {
        self.unsynced = 0;
        let mut result = Ok(0);
        for g in &mut self.groups {
            let synced = g.sync();
            if result.is_ok() {
                result = synced;
            }
        }
        result
    }

    /// Saves every group (state per parameter tensor under torch's numbering, step,
    /// configuration, learning rate, schedule position) and the loss scaler's state to one
    /// safetensors checkpoint, atomically (waits for the GPU).
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let groups = self
            .groups
            .iter()
            .zip(&self.shapes)
            .map(|(g, shapes)| g.snapshot(shapes.clone()))
            .collect::<Result<_>>()?;
        let scaler = match (&self.control, self.read_loss_scale()?) {
            (Some((_, GradControl { scaler: Some(growth), .. })), Some((scale, growth_tracker))) => {
                Some(ScalerState { scale, growth_tracker, growth: *growth })
            }
            _ => None,
        };
        Snapshot { groups, scaler }.save(path.as_ref())
    }

    /// Loads a checkpoint written by [`save`](Self::save) for the same groups (optimizers,
    /// hyper-parameters, tensor lengths), schedules (set them before loading) and loss
    /// scaler (configure it before loading). Every group is checked before anything is
    /// written, so a bad file leaves every group as it was.
    pub fn load(&mut self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let path = path.as_ref();
        let snapshot = Snapshot::load(path)?;
        if snapshot.groups.len() != self.groups.len() {
            let message =
                format!("the checkpoint holds {} param groups, not {}", snapshot.groups.len(), self.groups.len());
            return Err(crate::checkpoint::bad(path, message));
        }
        let restores = self
            .groups
            .iter()
            .zip(&snapshot.groups)
            .zip(&self.shapes)
            .map(|((g, saved), shapes)| g.check_restore(path, saved, shapes))
            .collect::<Result<Vec<_>>>()?;
        let configured = self.control.as_ref().and_then(|(_, c)| c.scaler);
        let scaler = crate::checkpoint::check_scaler(path, snapshot.scaler, configured)?;
        for (g, restore) in self.groups.iter_mut().zip(restores) {
            g.restore(restore)?;
        }
        if let (Some(s), Some((reducer, _))) = (scaler, &self.control) {
            let words = [s.scale, s.growth_tracker as f32, 0.0, 0.0]; // the tracker is kept as a float
            self.ctx.scoped("restoring the loss scale", || {
                self.ctx.queue().write_buffer(&reducer.scaler, 0, bytemuck::cast_slice(&words));
            })?;
        }
        Ok(())
    }

    /// Drives every group's learning rate by `schedule` from the next step on, each group
    /// from its own current learning rate (torch's LRScheduler over an optimizer, which scales
    /// each group's `initial_lr`); see [`GpuOptimizer::set_schedule`]. All groups or none.
    pub fn set_schedule(&mut self, schedule: Option<Box<dyn crate::schedule::Schedule>>) -> Result<()> {
        let slots = self
            .groups
            .iter()
            .map(|g| crate::schedule::attach(g.optimizer(), g.step_count(), schedule.clone()))
            .collect::<Result<Vec<_>>>()?;
        for (g, slot) in self.groups.iter_mut().zip(slots) {
            g.put_schedule(slot);
        }
        Ok(())
    }

    /// Drives group `index`'s learning rate by a schedule of its own (see
    /// [`GpuOptimizer::set_schedule`]).
    pub fn set_group_schedule(
        &mut self,
        index: usize,
        schedule: Option<Box<dyn crate::schedule::Schedule>>,
    ) -> Result<()> {
        let n = self.groups.len();
        self.groups.get_mut(index).ok_or(Error::NoSuchGroup { index, groups: n })?.set_schedule(schedule)
    }

    /// Changes group `index`'s configuration between steps (see
    /// [`GpuOptimizer::reconfigure`]): a different learning rate or weight decay per group.
    pub fn reconfigure(&mut self, index: usize, optimizer: impl Into<Box<dyn Optimizer>>) -> Result<()> {
        let n = self.groups.len();
        self.groups.get_mut(index).ok_or(Error::NoSuchGroup { index, groups: n })?.reconfigure(optimizer)
    }
}

impl engine::Stepper for ParamGroups {
    fn context(&self) -> GpuContext {
        self.ctx.clone()
    }
    fn prepare(&mut self, k: u32) -> Result<()> {
        self.groups.iter_mut().try_for_each(|g| g.prepare(k))
    }
    fn encode(&mut self, encoder: &mut wgpu::CommandEncoder, k: u32) {
        self.encode_steps(encoder, k)
    }
    fn encode_in_pass(&mut self, pass: &mut wgpu::ComputePass<'_>, k: u32) {
        self.groups.iter_mut().for_each(|g| g.write_scalars(k));
        for j in 0..k {
            self.record_step(pass, j);
        }
    }
    fn tracks_updates(&self) -> bool {
        self.groups.iter().any(|g| g.tracked().is_some())
    }
    fn taken(&mut self, k: u32) {
        self.unsynced = self.unsynced.saturating_add(k);
        self.groups.iter_mut().for_each(|g| g.advance(k));
    }
}

/// The tensors of group `g`, named for messages: parameters (written) and gradients (read).
fn group_bindings<'a>(g: usize, group: &ParamGroup<'a>) -> Vec<crate::tensor::BoundTensor<'a>> {
    let params = group.params.iter().enumerate().map(move |(t, p)| (format!("group {g} tensor {t}"), *p, true));
    let grads =
        group.grads.iter().enumerate().map(move |(t, q)| (format!("group {g} tensor {t}'s gradient"), *q, false));
    params.chain(grads).collect()
}

/// Every group's tensors against every other's: no parameter twice, none overlapping a
/// gradient.
fn check_groups_disjoint(groups: &[(usize, &ParamGroup<'_>)]) -> Result<()> {
    let bound: Vec<_> = groups.iter().flat_map(|(g, group)| group_bindings(*g, group)).collect();
    crate::tensor::check_disjoint(&bound)
}

/// Every group's gradients as the gradient control reads them: sub-ranges end to end in one
/// buffer as one, so that an arena's views cost the norm one dispatch per run, not per view.
fn merged(ctx: &GpuContext, grads: GpuTensor) -> GpuTensor {
    let max_len = ctx.tuning().segment_len();
    let [merged] = crate::tensor::merge_contiguous([&grads], max_len);
    merged
}
