//! The CPU side: the same per-element update, run sequentially (the reference the GPU is
//! checked against) or split across threads (the baseline the GPU is benchmarked against).

use ndarray::Array1;

use crate::checkpoint::{GroupSnapshot, ScalerState, Snapshot, check_scaler};
use crate::clip::{CpuGradControl, GradControl};
use crate::error::{Error, Result};
use crate::format::HostTensor;
use crate::optim::{Optimizer, StateSlices, StateSlot};
use crate::precision::{MASTER, Precision};
use crate::schedule::Schedule;
use crate::step::{CPU_REDUCE_CHUNK, REDUCED_TERMS, Scope, Stage};
use crate::tensor::HostData;
use rayon::prelude::*;

/// How a [`CpuOptimizer`] runs its step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Threads {
    /// One pass on the calling thread: the reference.
    #[default]
    Sequential,
    /// Split into cache-friendly chunks run on rayon's current thread pool (use
    /// `ThreadPool::install` to choose the thread count). Bit-identical to `Sequential`:
    /// the update is element-wise.
    Parallel,
}

/// Elements per leaf of the parallel split: large enough to amortise scheduling (a leaf
/// moves ~0.5 MiB for Adam), small enough to balance across cores.
const LEAF: usize = 1 << 14;

/// An optimizer whose parameters and state live in host memory.
#[derive(Clone, Debug)]
pub struct CpuOptimizer {
    optimizer: Box<dyn Optimizer>,
    params: Array1<f32>,
    /// The parameters' shape (`[len]` unless given), which a shaped step follows.
    shape: Vec<usize>,
    state: Vec<Array1<f32>>,
    /// Each 8-bit slot's codes and absmax (its `state` holds the values they stand for);
    /// `None` for other slots, and where the tensor is too small to keep 8-bit state.
    blocks: Vec<Option<crate::quant::Blocks>>,
    step: u64,
    threads: Threads,
    /// The schedule, the learning rate it scales, and the step it started after.
    schedule: Option<(Box<dyn Schedule>, f64, u64)>,
    /// Gradient control (clipping, loss scale, skip-on-inf), as on the GPU.
    control: Option<CpuGradControl>,
    /// The gradients as a controlled step reads them (unscaled, clipped), or as a 16-bit
    /// format holds them.
    controlled: Vec<f32>,
    /// The element format of the parameters and gradients: each holds a value of it, and
    /// every updated parameter is stored rounded to it, as on the GPU.
    format: crate::ElementFormat,
    /// How a step stores the parameters, and the f32 master copy where it keeps one.
    precision: Precision,
    master: Option<Array1<f32>>,
    /// A schedule-free optimizer's eval mode: the parameters hold x, and steps are refused.
    eval_mode: bool,
}

impl CpuOptimizer {
    /// Copies `params` (a flat tensor) and creates zeroed state; steps run
    /// [`Threads::Sequential`].
    pub fn new(optimizer: impl Into<Box<dyn Optimizer>>, params: &(impl HostData + ?Sized)) -> Result<Self> {
        let p = params.as_f32s()?;
        Self::with_shape(optimizer, p, &[p.len()])
    }

    /// Copies `params`, a tensor of `shape` (row-major, as torch's), and creates its state:
    /// what a shaped step such as Adafactor's follows (rank ≥ 2 is factored over the last two
    /// dimensions). Element-wise optimizers ignore the shape.
    pub fn with_shape(
        optimizer: impl Into<Box<dyn Optimizer>>,
        params: &(impl HostData + ?Sized),
        shape: &[usize],
    ) -> Result<Self> {
        let optimizer = optimizer.into();
        optimizer.validate()?;
        crate::step::check_supported(optimizer.name(), optimizer.kernel().stages)?;
        // A 16-bit state slot holds f32 values of that format here, each stored rounded.
        if optimizer.kernel().is_staged() {
            for (i, slot) in optimizer.kernel().state.iter().enumerate() {
                if optimizer.uses_state(i) {
                    optimizer.state_format(i).require(slot.torch_name, crate::ElementFormat::F32)?;
                }
            }
        }
        let params = params.as_f32s()?;
        if params.is_empty() {
            return Err(Error::Empty { what: "params" });
        }
        crate::optim::check_shape("params (shape)", shape, params.len())?;
        optimizer.check_param_shape(shape)?;
        let mut state: Vec<Array1<f32>> = (0..optimizer.kernel().state.len())
            .map(|i| {
                let init = optimizer.state_format(i).round(optimizer.state_init(i));
                host_array(optimizer.state_len(i, shape), init)
            })
            .collect::<Result<_>>()?;
        let blocks = state
            .iter_mut()
            .enumerate()
            .map(|(i, values)| {
                let quantized = optimizer.state_format(i) == crate::ElementFormat::Blockwise8
                    && crate::quant::is_quantized(params.len())
                    && !values.is_empty();
                let signed = optimizer.kernel().state[i].signed;
                Ok(quantized.then(|| crate::quant::Blocks::quantize(values.as_slice_mut().unwrap_or_default(), signed)))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut copy = host_array(params.len(), 0.0)?;
        copy.as_slice_mut().ok_or_else(not_contiguous)?.copy_from_slice(params);
        Ok(CpuOptimizer {
            optimizer,
            params: copy,
            shape: shape.to_vec(),
            state,
            blocks,
            step: 0,
            threads: Threads::Sequential,
            schedule: None,
            control: None,
            controlled: Vec::new(),
            format: crate::ElementFormat::F32,
            precision: Precision::default(),
            master: None,
            eval_mode: false,
        })
    }

    /// The same optimizer with parameters and gradients in `format` (f32, bf16 or f16): the
    /// parameters are rounded to it now, each step's gradients are read rounded to it, and
    /// every parameter a step updates is stored rounded to it (to nearest, ties to even, as
    /// [`ElementFormat::encode`](crate::ElementFormat::encode)) — bit for bit what a
    /// [`GpuOptimizer`](crate::GpuOptimizer) on tensors of that format computes. The
    /// arithmetic stays f32 and the state f32. A 16-bit format takes element-wise optimizers
    /// without gradient control.
    pub fn with_format(mut self, format: crate::ElementFormat) -> Result<Self> {
        if format.is_packed() {
            if self.optimizer.kernel().is_staged() {
                return Err(Error::Unsupported(format!(
                    "{} parameters for {}: a step with a reduction stage reads f32 parameters and gradients only",
                    format.name(),
                    self.optimizer.name()
                )));
            }
            if self.control.is_some() {
                return Err(Error::Unsupported(format!(
                    "{} parameters under gradient control: the global norm reads f32 gradients",
                    format.name()
                )));
            }
        }
        for x in self.params.iter_mut() {
            *x = format.round(*x);
        }
        self.format = format;
        Ok(self)
    }

    /// The same optimizer storing its parameters `precision`'s way, as
    /// [`GpuOptimizer::with_precision`](crate::GpuOptimizer::with_precision) (after
    /// [`with_format`](Self::with_format), before the first step): stochastic rounding draws
    /// the same random bits for each element and step as the GPU; master weights start as the
    /// parameters' values.
    pub fn with_precision(mut self, precision: Precision) -> Result<Self> {
        if self.step > 0 {
            return Err(Error::Unsupported(format!(
                "with_precision after {} steps: the precision is chosen before the first step",
                self.step
            )));
        }
        precision.check(&*self.optimizer, self.format)?;
        self.master = (precision == Precision::MasterWeights).then(|| self.params.clone());
        self.precision = precision;
        Ok(self)
    }

    /// How a step stores the parameters.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The same optimizer running with `threads`.
    pub fn with_threads(self, threads: Threads) -> Self {
        CpuOptimizer { threads, ..self }
    }

    /// Takes one step with `grads`. Under gradient control
    /// ([`set_grad_control`](Self::set_grad_control)) the step reads `(g / loss scale) *
    /// clip coefficient`, and a gradient holding a NaN or an infinity skips it: parameters,
    /// state and step count stay bit-identical, as on the GPU.
    pub fn step(&mut self, grads: &(impl HostData + ?Sized)) -> Result<()> {
        if self.eval_mode {
            return Err(crate::train_mode::refuse_step(self.optimizer.name()));
        }
        let g = grads.as_f32s()?;
        if g.len() != self.params.len() {
            return Err(Error::LengthMismatch { what: "grads", expected: self.params.len(), actual: g.len() });
        }
        let step = self.step + 1;
        // The schedule's learning rate for this step, checked before anything changes; it
        // stays only if the step is taken.
        let old_lr = crate::schedule::Scheduled::of(&*self.optimizer);
        if let Some((schedule, base, origin)) = &self.schedule {
            let scheduled = crate::schedule::Scheduled::at(&**schedule, *base, step - 1 - origin);
            scheduled.put_checked(&mut *self.optimizer).map_err(|e| Error::InvalidHyperParameter {
                optimizer: self.optimizer.name(),
                message: format!("the schedule's learning rate for step {step} is refused: {e}"),
            })?;
        }
        let g = match &mut self.control {
            None if self.format.is_packed() => {
                self.controlled.clear();
                self.controlled.extend(g.iter().map(|&x| self.format.round(x)));
                &self.controlled
            }
            None => g,
            Some(control) => {
                let [inv_scale, coef, found_inf, _] = control.reduce(g);
                if found_inf != 0.0 {
                    control.update_scale();
                    old_lr.put(&mut *self.optimizer);
                    return Ok(());
                }
                self.controlled.clear();
                // The GPU's `grad(i)`: two roundings, as torch's unscale_ then clip_grad_norm_.
                self.controlled.extend(g.iter().map(|&x| (x * inv_scale) * coef));
                &self.controlled
            }
        };
        let parallel = self.threads == Threads::Parallel;
        let (o, shape, format, precision) = (&*self.optimizer, &self.shape, self.format, self.precision);
        let (params, states, master, blocks) = (&mut self.params, &mut self.state, &mut self.master, &mut self.blocks);
        let mut update = || -> Result<()> {
            let mut p = params.as_slice_mut().ok_or_else(not_contiguous)?;
            let mut state: Vec<&mut [f32]> =
                states.iter_mut().map(|a| a.as_slice_mut().ok_or_else(not_contiguous)).collect::<Result<_>>()?;
            // With master weights the update reads and writes the master, and the parameters
            // ride along as one more slot, stored rounded from it.
            if let Some(m) = master {
                state.push(std::mem::replace(&mut p, m.as_slice_mut().ok_or_else(not_contiguous)?));
            }
            let state = &mut state[..];
            if o.kernel().is_shaped() {
                o.shaped_cpu(step, shape, p, g, state, parallel)
            } else if o.kernel().is_staged() {
                run_stages(o, step, p, g, state, parallel)
            } else {
                // Each updated parameter and state element stored in its format (nothing to do
                // for f32); stochastic rounding keyed by the element's index (from where this
                // leaf's slice starts) and the step, as the GPU's.
                let first = p.as_ptr() as usize;
                let slots = o.kernel().state.len();
                let leaf = |p: &mut [f32], g: &[f32], s: StateSlices<'_, '_>| {
                    let (s, rounded) = s.split_at_mut(slots);
                    o.update_cpu(step, p, g, s);
                    match (precision, rounded.first_mut()) {
                        (Precision::MasterWeights, Some(out)) => {
                            out.iter_mut().zip(p.iter()).for_each(|(y, &x)| *y = format.round(x));
                        }
                        (Precision::StochasticRounding { seed }, _) => {
                            let at = ((p.as_ptr() as usize - first) / size_of::<f32>()) as u64;
                            for (k, x) in p.iter_mut().enumerate() {
                                *x = crate::precision::round_stochastic(seed, step as u32, at + k as u64, *x);
                            }
                        }
                        _ if format.is_packed() => p.iter_mut().for_each(|x| *x = format.round(*x)),
                        _ => {}
                    }
                    for (i, slot) in s.iter_mut().enumerate() {
                        let f = o.state_format(i);
                        if f.is_packed() {
                            slot.iter_mut().for_each(|x| *x = f.round(*x));
                        }
                    }
                };
                if parallel {
                    parallel_split(p, g, state, &leaf);
                } else {
                    leaf(p, g, state);
                }
                // 8-bit state: each block quantized again from its new values (which the
                // parameter update above read), as the GPU's block-wise step does.
                for (b, values) in blocks.iter_mut().zip(state.iter_mut()) {
                    if let Some(b) = b {
                        b.requantize(values, parallel);
                    }
                }
                Ok(())
            }
        };
        // A step that fails leaves the learning rate as it was, too.
        if let Err(e) = update() {
            old_lr.put(&mut *self.optimizer);
            return Err(e);
        }
        self.step = step;
        if let Some(control) = &mut self.control {
            control.update_scale();
        }
        Ok(())
    }

    /// Turns gradient control on (or off, with `None`): the same global-norm clipping,
    /// loss-scale unscaling, skip-on-inf and GradScaler update as
    /// [`ParamGroups::set_grad_control`](crate::ParamGroups::set_grad_control), with the
    /// GPU's reduction order, so both compute the same norm. The loss scale starts (again)
    /// at `loss_scale`.
    pub fn set_grad_control(&mut self, control: Option<GradControl>) -> Result<()> {
        if control.is_some() && self.format.is_packed() {
            return Err(Error::Unsupported(format!(
                "gradient control over {} gradients: the global norm reads f32 gradients",
                self.format.name()
            )));
        }
        self.control = control.map(CpuGradControl::new).transpose()?;
        Ok(())
    }

    /// The last step's gradient control — `[1 / loss scale, clip coefficient, found_inf (1
    /// or 0), total norm]` — or `None` without gradient control.
    pub fn last_grad_control(&self) -> Option<[f32; 4]> {
        self.control.map(|c| c.last)
    }

    /// The loss scale and its growth tracker, or `None` without gradient control.
    pub fn loss_scale(&self) -> Option<(f32, u32)> {
        self.control.map(|c| (c.scaler[0], c.scaler[1] as u32))
    }

    /// Drives the learning rate by `schedule` from the next step on (see
    /// [`GpuOptimizer::set_schedule`](crate::GpuOptimizer::set_schedule)).
    pub fn set_schedule(&mut self, schedule: Option<Box<dyn Schedule>>) -> Result<()> {
        self.schedule = crate::schedule::attach(&*self.optimizer, self.step, schedule)?;
        Ok(())
    }

    /// Saves the state to a safetensors checkpoint, atomically (see
    /// [`GpuOptimizer::save`](crate::GpuOptimizer::save); the two read each other's files).
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        if self.optimizer.train_mode_weight(false).is_some() && !self.eval_mode {
            return Err(crate::train_mode::refuse_save(self.optimizer.name()));
        }
        let o = &*self.optimizer;
        let format = |slot: &StateSlot| {
            o.kernel()
                .state
                .iter()
                .position(|s| std::ptr::eq(s, slot))
                .map_or(crate::ElementFormat::F32, |i| o.state_format(i))
        };
        let blocks = |slot: &StateSlot| {
            let i = o.kernel().state.iter().position(|s| std::ptr::eq(s, slot))?;
            self.blocks.get(i)?.as_ref()
        };
        let state = self
            .state()
            .map(|(slot, t)| {
                let values = t.as_slice().ok_or_else(not_contiguous)?;
                Ok((
                    slot,
                    match (format(slot), blocks(slot)) {
                        // 8-bit state: its blocks, or the f32 values of a tensor too small for them.
                        (crate::ElementFormat::Blockwise8, Some(b)) => {
                            HostTensor { format: crate::ElementFormat::Blockwise8, bytes: b.to_bytes() }
                        }
                        (crate::ElementFormat::Blockwise8, None) => HostTensor {
                            format: crate::ElementFormat::Blockwise8,
                            bytes: bytemuck::cast_slice(values).to_vec(),
                        },
                        (f, _) => HostTensor::from_f32s_as(f, values),
                    },
                ))
            })
            .collect::<Result<_>>()?;
        let shapes = vec![self.shape.clone()];
        let group = GroupSnapshot::of(o, self.step, shapes, state, &self.schedule, self.precision);
        let scaler = self.control.and_then(|c| {
            let growth = c.control.scaler?;
            Some(ScalerState { scale: c.scaler[0], growth_tracker: c.scaler[1] as u32, growth })
        });
        Snapshot { groups: vec![group], scaler }.save(path.as_ref())
    }

    /// Loads a checkpoint of the same configuration and size (see
    /// [`GpuOptimizer::load`](crate::GpuOptimizer::load)); a bad file changes nothing.
    pub fn load(&mut self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let path = path.as_ref();
        let snapshot = Snapshot::load(path)?;
        let shapes = std::slice::from_ref(&self.shape);
        let restore = snapshot.single(path)?.restore(path, &*self.optimizer, shapes, &self.schedule, self.precision)?;
        let scaler = check_scaler(path, snapshot.scaler, self.control.and_then(|c| c.control.scaler))?;
        // Converted whole before anything is replaced (the formats were checked as the slots').
        let kernel = self.optimizer.kernel();
        let n = self.params.len();
        let mut blocks = self.blocks.clone();
        let mut state = Vec::with_capacity(restore.state.len());
        for (i, d) in restore.state.iter().enumerate() {
            state.push(match d {
                // 8-bit state: the blocks, and the values they stand for (checked as the slot's).
                Some(d) if blocks[i].is_some() => {
                    let (b, values) = crate::quant::Blocks::from_bytes(&d.bytes, n, kernel.state[i].signed);
                    blocks[i] = Some(b);
                    Some(values)
                }
                Some(d) => Some(d.to_f32s()?),
                None => None,
            });
        }
        let master = restore.master.map(HostTensor::to_f32s).transpose()?;
        for (t, data) in self.state.iter_mut().zip(state) {
            if let Some(data) = data {
                *t = Array1::from(data);
            }
        }
        self.blocks = blocks;
        if let (Some(m), Some(data)) = (&mut self.master, master) {
            *m = Array1::from(data);
        }
        self.step = restore.step;
        self.optimizer = restore.optimizer;
        // A schedule-free checkpoint is saved in eval mode, and loads into it.
        self.eval_mode = self.optimizer.train_mode_weight(false).is_some();
        crate::checkpoint::resume_schedule(&mut self.schedule, restore.schedule);
        if let (Some(s), Some(control)) = (scaler, &mut self.control) {
            control.scaler = [s.scale, s.growth_tracker as f32];
        }
        Ok(())
    }

    /// Into train mode (see [`GpuOptimizer::train`](crate::GpuOptimizer::train)).
    pub fn train(&mut self) -> Result<()> {
        self.set_mode(true)
    }

    /// Into eval mode (see [`GpuOptimizer::eval`](crate::GpuOptimizer::eval)).
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
        self.format.require("the parameters moved between train and eval mode", crate::ElementFormat::F32)?;
        if self.step > 0 {
            let z = self.state[slot].as_slice().ok_or_else(not_contiguous)?;
            crate::train_mode::swap_on_host(self.params.as_slice_mut().ok_or_else(not_contiguous)?, z, weight);
        }
        self.eval_mode = !train;
        Ok(())
    }

    /// Steps taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The optimizer's configuration.
    pub fn optimizer(&self) -> &dyn Optimizer {
        &*self.optimizer
    }

    /// Changes the learning rate for the following steps.
    pub fn set_lr(&mut self, lr: f64) -> Result<()> {
        crate::optim::set_lr_checked(&mut *self.optimizer, lr)
    }

    /// Replaces the configuration between steps, keeping the state (same family, same
    /// state tensors; see [`GpuOptimizer::reconfigure`](crate::GpuOptimizer::reconfigure)).
    pub fn reconfigure(&mut self, optimizer: impl Into<Box<dyn Optimizer>>) -> Result<()> {
        let next = optimizer.into();
        crate::optim::check_takeover(&*self.optimizer, &*next)?;
        self.optimizer = next;
        Ok(())
    }

    /// The parameters.
    pub fn params(&self) -> &Array1<f32> {
        &self.params
    }

    /// The state tensors this configuration keeps for the parameters' shape, with their
    /// names, and the master weights (`master_param`) where the steps keep them.
    pub fn state(&self) -> impl Iterator<Item = (&'static StateSlot, &Array1<f32>)> {
        let kept = self.optimizer.kernel().state.iter().zip(&self.state).filter(|(_, t)| !t.is_empty());
        kept.chain(self.master.as_ref().map(|m| (&MASTER, m)))
    }

    /// The parameters' shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// One state tensor by role (`m`) or torch name (`exp_avg`).
    pub fn state_tensor(&self, name: &str) -> Option<&Array1<f32>> {
        self.state().find(|(s, _)| s.role == name || s.torch_name == name).map(|(_, t)| t)
    }
}

/// `len` copies of `value`, or `Error::OutOfMemory` where the host cannot hold them (not an
/// abort).
fn host_array(len: usize, value: f32) -> Result<Array1<f32>> {
    let mut v: Vec<f32> = Vec::new();
    v.try_reserve_exact(len).map_err(|e| Error::OutOfMemory {
        during: "allocating CPU optimizer state",
        message: format!("{len} f32 values: {e}"),
    })?;
    v.resize(len, value);
    Ok(Array1::from(v))
}

fn not_contiguous() -> Error {
    Error::NotContiguous { what: "params" }
}

/// One chunk of a reduction: its parameters, gradients and state slots.
type Chunk<'a, 'b> = (&'a mut [f32], &'b [f32], Vec<&'a mut [f32]>);

/// `p`, `g` and every state slot cut into chunks of `size` elements, side by side.
fn chunks<'a, 'b>(p: &'a mut [f32], g: &'b [f32], state: &'a mut [&mut [f32]], size: usize) -> Vec<Chunk<'a, 'b>> {
    let mut chunks: Vec<Chunk<'a, 'b>> =
        p.chunks_mut(size).zip(g.chunks(size)).map(|(p, g)| (p, g, Vec::new())).collect();
    for slot in state.iter_mut() {
        let mut rest: &mut [f32] = slot;
        for (p, _, parts) in &mut chunks {
            let at = p.len().min(rest.len());
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(at);
            parts.push(head);
            rest = tail;
        }
    }
    chunks
}

/// Runs `f` on every chunk, in parallel or not; the results in chunk order.
fn each_chunk<T: Send>(
    chunks: Vec<Chunk<'_, '_>>,
    parallel: bool,
    f: impl Fn(usize, Chunk<'_, '_>) -> T + Sync,
) -> Vec<T> {
    if parallel {
        chunks.into_par_iter().enumerate().map(|(i, c)| f(i, c)).collect()
    } else {
        chunks.into_iter().enumerate().map(|(i, c)| f(i, c)).collect()
    }
}

/// Runs a staged optimizer's step over one tensor, stage by stage: a reduction over fixed
/// chunks of [`CPU_REDUCE_CHUNK`] elements (in parallel or not, the partial sums are added in
/// chunk order, so both give the same bits), then the element-wise stage with the sums; or a
/// per-block reduction, then the element-wise stage block by block with each block's terms.
fn run_stages(
    o: &dyn Optimizer,
    step: u64,
    p: &mut [f32],
    g: &[f32],
    state: StateSlices<'_, '_>,
    parallel: bool,
) -> Result<()> {
    let mut reduced = [0.0f32; REDUCED_TERMS];
    // The block size and each block's terms, after a per-block reduction.
    let mut per_block: Option<(usize, Vec<[f32; REDUCED_TERMS]>)> = None;
    for (i, stage) in o.kernel().stages.iter().enumerate() {
        match stage {
            Stage::Reduce(Scope::Block(b)) | Stage::ReduceMax(Scope::Block(b)) => {
                let b = *b as usize;
                let terms = each_chunk(chunks(p, g, state, b), parallel, |_, (p, g, mut s)| {
                    o.reduce_cpu(i, step, p, g, &mut s).map(|x| x as f32)
                });
                per_block = Some((b, terms));
            }
            Stage::Reduce(Scope::Tensor | Scope::Group) => {
                let sums = each_chunk(chunks(p, g, state, CPU_REDUCE_CHUNK), parallel, |_, (p, g, mut s)| {
                    o.reduce_cpu(i, step, p, g, &mut s)
                });
                let mut total = [0.0f64; REDUCED_TERMS];
                for s in &sums {
                    for (t, x) in total.iter_mut().zip(s) {
                        *t += x;
                    }
                }
                reduced = total.map(|x| x as f32);
            }
            Stage::Elementwise => match &per_block {
                Some((b, terms)) => {
                    each_chunk(chunks(p, g, state, *b), parallel, |k, (p, g, mut s)| {
                        o.apply_cpu(step, p, g, &mut s, terms[k])
                    });
                }
                None if parallel => parallel_split(p, g, state, &|p, g, s| o.apply_cpu(step, p, g, s, reduced)),
                None => o.apply_cpu(step, p, g, state, reduced),
            },
            other => {
                return Err(Error::Unsupported(format!("{}: the CPU side has no {other:?} stage yet", o.name())));
            }
        }
    }
    Ok(())
}

/// A function of one leaf of the parallel split.
pub(crate) type Leaf<'f> = dyn Fn(&mut [f32], &[f32], StateSlices<'_, '_>) + Sync + 'f;

/// Splits every slice at the same point, halves recursively on rayon until a leaf is at
/// most [`LEAF`] elements, and runs `leaf` (the optimizer's own update) on each. The only
/// allocation is the list of state halves at each split (one per ~[`LEAF`] elements).
/// Empty state slices stay empty.
pub(crate) fn parallel_split(p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>, leaf: &Leaf<'_>) {
    if p.len() <= LEAF {
        leaf(p, g, state);
        return;
    }
    // Split on a 64-element boundary so no cache line is shared by two leaves.
    let mid = (p.len() / 2) & !63;
    let (pl, pr) = p.split_at_mut(mid);
    let (gl, gr) = g.split_at(mid);
    let (mut left, mut right): (Vec<&mut [f32]>, Vec<&mut [f32]>) = state
        .iter_mut()
        .map(|s| {
            let at = mid.min(s.len());
            s.split_at_mut(at)
        })
        .unzip();
    rayon::join(|| parallel_split(pl, gl, &mut left, leaf), || parallel_split(pr, gr, &mut right, leaf));
}
