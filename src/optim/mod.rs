//! The optimizers: each file holds one family's config (torch names, defaults, validation),
//! its per-element CPU update and how it binds to its WGSL shader.
//!
//! Adding an optimizer: one WGSL file in `shaders/`, one file here implementing
//! [`Optimizer`], one line in [`ALL`], and its rows in the test tables.

mod adabelief;
mod adadelta;
pub(crate) mod adafactor;
mod adagrad;
mod adam;
mod adamax;
mod adan;
mod lamb;
mod lars;
mod lion;
mod muon;
mod nadam;
mod radam;
mod rmsprop;
mod schedule_free;
mod sgd;
pub(crate) mod sparse_adam;

pub use adabelief::AdaBelief;
pub use adadelta::Adadelta;
pub use adafactor::{Adafactor, Factoring};
pub use adagrad::Adagrad;
pub use adam::{Adam, AdamW};
pub use adamax::Adamax;
pub use adan::Adan;
pub use lamb::Lamb;
pub use lars::Lars;
pub use lion::Lion;
pub use muon::{AdjustLr, Muon, NsPrecision, muon_with_adamw};
pub use nadam::NAdam;
pub use radam::RAdam;
pub use rmsprop::RmsProp;
pub use schedule_free::{AdamWScheduleFree, SgdScheduleFree};
pub use sgd::Sgd;
pub use sparse_adam::{RowRule, SparseAdam, SparseSgd};

use crate::error::{Error, Result};

/// One per-parameter state tensor: the role name used in this crate and torch's
/// `state_dict` name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateSlot {
    /// Role name (optax style): `m`, `v`, `v_max`, `momentum`.
    pub role: &'static str,
    /// torch.optim's state name: `exp_avg`, `exp_avg_sq`, `max_exp_avg_sq`, `momentum_buffer`.
    pub torch_name: &'static str,
    /// Whether the state takes both signs (a first moment, a momentum) or is never negative
    /// (a second moment, a sum of squares): which map its 8-bit blockwise form uses.
    pub signed: bool,
}

/// An optimizer family's shader and state layout, shared by its variants.
#[derive(Debug)]
pub struct Kernel {
    /// Family name, also the shader's file stem.
    pub family: &'static str,
    /// WGSL source of the family's update (without the common prelude).
    pub source: &'static str,
    /// State tensors, in binding order after `p` and `g`.
    pub state: &'static [StateSlot],
    /// Bytes of the family's per-step scalar struct (the stride of the GPU's step table).
    pub scalar_size: usize,
    /// Largest GPU-vs-CPU difference one step may make, in units of f32 epsilon times the
    /// operand scale (|value| + its per-step change): the sum over the ops of the update of
    /// WGSL's stated precision (`+ - *` 0.5 ulp, `/` 2.5, `sqrt` 4.5 as `1/inverseSqrt`, an
    /// unfused `fma` one more rounding) and the CPU's 0.5 ulp per op.
    pub step_error_budget: f32,
    /// The stages of a step ([`crate::step`]): [`crate::step::ELEMENTWISE`] for most.
    pub stages: &'static [crate::step::Stage],
}

impl Kernel {
    /// Whether the step has more than one element-wise stage (a reduction, say).
    pub fn is_staged(&self) -> bool {
        self.stages != crate::step::ELEMENTWISE
    }

    /// Whether a stage follows the parameters' shapes (a row or column reduction, a matrix
    /// product).
    pub fn is_shaped(&self) -> bool {
        use crate::step::Stage;
        self.stages.iter().any(|s| matches!(s, Stage::Reduce(scope) if scope.is_shaped()) || *s == Stage::MatMul)
    }
}

/// Checks that `shape` (see [`numel`]) describes `len` elements; `what` names the tensor.
pub(crate) fn check_shape(what: &'static str, shape: &[usize], len: usize) -> Result<()> {
    let n = numel(shape)?;
    if n == len { Ok(()) } else { Err(Error::LengthMismatch { what, expected: n, actual: len }) }
}

/// Elements of a tensor of `shape`, checked: `Err` names the shape when the product
/// overflows, and an empty tensor is refused.
pub fn numel(shape: &[usize]) -> Result<usize> {
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::OverLimit(format!("shape {shape:?} has more elements than usize holds")))?;
    if n == 0 {
        return Err(Error::Empty { what: "tensor shape" });
    }
    Ok(n)
}

/// Per-step scalars as the uniform block a kernel reads (64 bytes, read as the family's own
/// WGSL struct).
pub type ScalarBlock = [u32; 16];

/// Packs a family's scalar struct (at most 64 bytes) into a [`ScalarBlock`].
pub fn pack<T: bytemuck::Pod>(scalars: &T) -> ScalarBlock {
    const { assert!(size_of::<T>() <= size_of::<ScalarBlock>(), "a step's scalars fit 64 bytes") };
    let mut block = [0u32; 16];
    bytemuck::cast_slice_mut::<u32, u8>(&mut block)[..size_of::<T>()].copy_from_slice(bytemuck::bytes_of(scalars));
    block
}

/// The state slices a CPU update works on, one per [`Kernel::state`] slot in its order;
/// slots this configuration does not use are empty.
pub type StateSlices<'a, 'b> = &'a mut [&'b mut [f32]];

/// An optimizer: a config with torch.optim's names and defaults, and the two definitions of
/// its update (WGSL for the GPU, one per-element Rust function for the CPU).
///
/// `step` counts from 1: it is torch's `state["step"]` after the increment.
///
/// This is an extension point: an optimizer defined in another crate runs on
/// [`GpuOptimizer`](crate::GpuOptimizer), [`CpuOptimizer`](crate::CpuOptimizer) and
/// [`ParamGroups`](crate::ParamGroups) like this crate's own (`tests/extension.rs` does it).
/// Its [`Kernel`] names a unique `family` and gives WGSL that defines `struct Scalars` (the
/// layout [`scalars`](Self::scalars) packs with [`pack`]) and `fn update(i: u32, s: Scalars)`,
/// which reads and writes element `i` (in units of `V`: `vec4<f32>` or `f32`, the engine
/// compiles both) through the accessors the engine declares for `p` and each state tensor of
/// [`Kernel::state`] — `load_p(i)`, `store_p(i, x)`, `load_exp_avg(i)`, … — and the gradient
/// through `grad(i)` (which applies gradient control); a staged step also defines
/// `reduce_update` (see [`crate::step`]). How the tensors are bound and stored is the engine's
/// alone. [`update_cpu`](Self::update_cpu) is the same update in Rust.
pub trait Optimizer: std::fmt::Debug + Send + Sync {
    /// Display name (`"AdamW"`).
    fn name(&self) -> &'static str;
    /// Every hyper-parameter as structured data (serde), what checkpoints store and compare.
    fn config(&self) -> serde_json::Value;
    /// The implementation whose numerics this one follows (`"torch.optim.AdamW"`).
    fn reference(&self) -> &'static str;
    /// Checks every hyper-parameter; messages follow torch.optim's.
    fn validate(&self) -> Result<()>;
    /// The learning rate.
    fn lr(&self) -> f64;
    /// Sets the learning rate (schedules call this between steps).
    fn set_lr(&mut self, lr: f64);
    /// The family's shader and state layout.
    fn kernel(&self) -> &'static Kernel;
    /// Whether this configuration uses state slot `slot` (e.g. `v_max` only with AMSGrad);
    /// by default every slot of the kernel.
    fn uses_state(&self, slot: usize) -> bool {
        let _ = slot;
        true
    }
    /// The element format state slot `slot` is kept in (f32 by default; the kernel reads it
    /// in this format, a checkpoint stores it in this format).
    fn state_format(&self, slot: usize) -> crate::ElementFormat {
        let _ = slot;
        crate::ElementFormat::F32
    }
    /// This configuration keeping every state slot in `format`, where the optimizer offers a
    /// choice (`with_state_format` on every element-wise optimizer, SGD … Adan); `None`
    /// where its state is f32 only. What a caller holding a `dyn Optimizer` (a benchmark, a
    /// command line) uses.
    fn boxed_with_state_format(&self, format: crate::ElementFormat) -> Option<Box<dyn Optimizer>> {
        let _ = format;
        None
    }
    /// The momentum a schedule may cycle (torch's OneCycleLR and CyclicLR with
    /// `cycle_momentum`): `momentum` where the optimizer has one, else `betas[0]`; `None`
    /// where it has neither, or where its step depends on the momentum's history (NAdam's
    /// `mu_product`, schedule-free's averaging weights).
    fn momentum(&self) -> Option<f64> {
        None
    }
    /// Sets the momentum [`momentum`](Self::momentum) names (nothing where it is `None`).
    fn set_momentum(&mut self, momentum: f64) {
        let _ = momentum;
    }
    /// Whether the optimizer has a train and an eval mode (schedule-free: the parameters hold
    /// y while training, x for evaluation), and how to move between them: the state slot z
    /// and the weight `w` of `p = lerp(p, z, w)` into train mode (`to_train`) or eval mode.
    /// `None` (the default): one mode.
    fn train_mode_weight(&self, to_train: bool) -> Option<(usize, f32)> {
        let _ = to_train;
        None
    }
    /// Checks that this optimizer takes a parameter of `shape` (Muon: matrices only); by
    /// default every shape. Called when an optimizer is built over parameters.
    fn check_param_shape(&self, shape: &[usize]) -> Result<()> {
        let _ = shape;
        Ok(())
    }
    /// Elements of state slot `slot` for a parameter of `shape`, 0 where this shape keeps
    /// none: by default the parameter's element count when the configuration uses the slot
    /// (state laid out like the parameter). A shaped step ([`Kernel::is_shaped`]) keeps
    /// state of other lengths: Adafactor's `row_var` and `col_var` for matrices, `variance`
    /// for vectors. `shape` has been checked by [`numel`].
    fn state_len(&self, slot: usize, shape: &[usize]) -> usize {
        if self.uses_state(slot) { shape.iter().product() } else { 0 }
    }
    /// Initial value of state slot `slot` (torch's `initial_accumulator_value` for Adagrad;
    /// zero for everything else).
    fn state_init(&self, slot: usize) -> f32 {
        let _ = slot;
        0.0
    }
    /// Scalars torch keeps per parameter beside the state tensors after step `step`, by
    /// torch's name: its `step` (a float32 tensor; default), NAdam's `mu_product`, nothing for
    /// SGD. Here they are functions of the step, written into checkpoints so that torch can
    /// read them, and checked when one is loaded.
    fn scalar_state(&self, step: u64) -> Vec<(&'static str, f32)> {
        vec![("step", step as f32)]
    }
    /// Checks the per-parameter scalars a checkpoint saved after step `step` (by name,
    /// sorted) and adopts them: by default they must equal [`scalar_state`](Self::scalar_state).
    /// One that is costly to recompute (NAdam's `mu_product`, a product over every step)
    /// overrides this to check plausibility and take the saved value, so that loading never
    /// costs time that grows with a number read from a file. `Err` says what is wrong.
    fn restore_scalar_state(&self, step: u64, saved: &[(String, f32)]) -> std::result::Result<(), String> {
        let expected = crate::checkpoint::scalars_of(self.scalar_state(step));
        if saved == expected {
            Ok(())
        } else {
            Err(format!("the per-parameter scalars {saved:?} are not those of step {step} ({expected:?})"))
        }
    }
    /// Values of the shader's `override` constants for this variant.
    fn constants(&self) -> Vec<(&'static str, f64)>;
    /// The per-step scalars for step `step`, computed on the host in f64 and rounded once to
    /// f32, as torch does.
    fn scalars(&self, step: u64) -> ScalarBlock;
    /// Applies step `step` to a contiguous run of elements. Element-wise: any split of the
    /// elements gives the same bits, which is what lets the parallel baseline use it too.
    /// A staged optimizer ([`Kernel::is_staged`]) implements
    /// [`reduce_cpu`](Self::reduce_cpu) and [`apply_cpu`](Self::apply_cpu) instead, and this
    /// is not called.
    fn update_cpu(&self, step: u64, p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>);
    /// A staged optimizer's reduction stage `stage` over a run of elements of one tensor:
    /// updates what the stage updates and returns the run's sums of its terms (f64; the CPU
    /// adds runs in a fixed order), or their maxima for a [`ReduceMax`](crate::step::Stage)
    /// stage. Under a per-block reduction each run is one block. The twin of the shader's
    /// `reduce_update`.
    fn reduce_cpu(
        &self,
        stage: usize,
        step: u64,
        p: &mut [f32],
        g: &[f32],
        state: StateSlices<'_, '_>,
    ) -> [f64; crate::step::REDUCED_TERMS] {
        let _ = (stage, step, p, g, state);
        [0.0; crate::step::REDUCED_TERMS]
    }
    /// A staged optimizer's element-wise stage over a run of elements, given the tensor's
    /// sums from the reductions before it (rounded to f32, as the GPU keeps them; under a
    /// per-block reduction the run is one block and these are its terms). The twin of
    /// the shader's `update`. Defaults to [`update_cpu`](Self::update_cpu).
    fn apply_cpu(
        &self,
        step: u64,
        p: &mut [f32],
        g: &[f32],
        state: StateSlices<'_, '_>,
        reduced: [f32; crate::step::REDUCED_TERMS],
    ) {
        let _ = reduced;
        self.update_cpu(step, p, g, state)
    }
    /// A shaped step ([`Kernel::is_shaped`]) of one tensor of `shape` on the CPU, every stage
    /// in order: the twin of the family's entry points. `state` holds each slot's
    /// [`state_len`](Self::state_len) elements; `parallel` splits the work across rayon's
    /// threads with the same bits as the sequential reference. Others never get this call.
    fn shaped_cpu(
        &self,
        step: u64,
        shape: &[usize],
        p: &mut [f32],
        g: &[f32],
        state: StateSlices<'_, '_>,
        parallel: bool,
    ) -> Result<()> {
        let _ = (step, shape, p, g, state, parallel);
        Err(Error::Unsupported(format!("{}: the step follows no tensor shape", self.name())))
    }
    /// A boxed copy.
    fn clone_box(&self) -> Box<dyn Optimizer>;
}

impl Clone for Box<dyn Optimizer> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

impl<O: Optimizer + 'static> From<O> for Box<dyn Optimizer> {
    fn from(o: O) -> Self {
        Box::new(o)
    }
}

/// Makes an optimizer with torch's defaults.
pub type Maker = fn() -> Box<dyn Optimizer>;

/// Every optimizer this crate has, by its command-line name, with torch's defaults.
pub const ALL: &[(&str, Maker)] = &[
    ("sgd", || Box::new(Sgd::default())),
    ("adam", || Box::new(Adam::default())),
    ("adamw", || Box::new(AdamW::default())),
    ("nadam", || Box::new(NAdam::default())),
    ("radam", || Box::new(RAdam::default())),
    ("adagrad", || Box::new(Adagrad::default())),
    ("rmsprop", || Box::new(RmsProp::default())),
    ("adamax", || Box::new(Adamax::default())),
    ("adadelta", || Box::new(Adadelta::default())),
    ("adabelief", || Box::new(AdaBelief::default())),
    ("lion", || Box::new(Lion::default())),
    ("adan", || Box::new(Adan::default())),
    ("lamb", || Box::new(Lamb::default())),
    ("lars", || Box::new(Lars::default())),
    ("adafactor", || Box::new(Adafactor::default())),
    ("adamw-schedule-free", || Box::new(AdamWScheduleFree::default())),
    ("sgd-schedule-free", || Box::new(SgdScheduleFree::default())),
];

/// Looks an optimizer up by name (case-insensitive), with torch's defaults.
pub fn by_name(name: &str) -> Option<Box<dyn Optimizer>> {
    ALL.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, make)| make())
}

/// Sets the learning rate if the optimizer accepts it; otherwise leaves it as it was.
/// Allocation-free, so a schedule may call it every step.
pub(crate) fn set_lr_checked(o: &mut dyn Optimizer, lr: f64) -> Result<()> {
    let old = o.lr();
    o.set_lr(lr);
    o.validate().inspect_err(|_| o.set_lr(old))
}

/// Whether `next` may take over the state of `current`: same family, same state tensors.
pub(crate) fn check_takeover(current: &dyn Optimizer, next: &dyn Optimizer) -> Result<()> {
    next.validate()?;
    let bad = |message: String| Err(Error::Reconfigure(message));
    if !std::ptr::eq(next.kernel(), current.kernel()) {
        return bad(format!("{} cannot take over the state of {}", next.name(), current.name()));
    }
    for (i, slot) in current.kernel().state.iter().enumerate() {
        if next.uses_state(i) != current.uses_state(i) {
            let verb = if next.uses_state(i) { "needs" } else { "drops" };
            return bad(format!("the new configuration {verb} state {}", slot.torch_name));
        }
        if next.uses_state(i) && next.state_format(i) != current.state_format(i) {
            return bad(format!(
                "the new configuration keeps {} as {}, the state holds {}: a state keeps the format it was \
                 created with (make a new optimizer for another)",
                slot.torch_name,
                next.state_format(i).name(),
                current.state_format(i).name()
            ));
        }
    }
    Ok(())
}

/// `Err` with torch's message unless `ok`.
pub(crate) fn check(optimizer: &'static str, ok: bool, message: impl FnOnce() -> String) -> Result<()> {
    if ok { Ok(()) } else { Err(Error::InvalidHyperParameter { optimizer, message: message() }) }
}

/// Formats a float as Python prints it (`1e-08`, `-0.1`, `nan`), so messages read like torch's.
pub(crate) fn py(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    let a = x.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        let s = format!("{x:e}");
        let (mant, exp) = s.split_once('e').unwrap_or((&s, "0")); // ok: `{:e}` always has an 'e'
        let e: i32 = exp.parse().unwrap_or(0);
        return format!("{mant}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
    }
    let s = format!("{x}");
    if s.contains('.') { s } else { format!("{s}.0") }
}

/// torch's "Invalid learning rate" check (`not 0.0 <= lr`, which also rejects NaN).
pub(crate) fn check_lr(optimizer: &'static str, lr: f64) -> Result<()> {
    check(optimizer, lr >= 0.0, || format!("Invalid learning rate: {}", py(lr)))
}

/// torch's `not 0.0 <= value` check with its message "Invalid {what} value: {value}".
pub(crate) fn check_non_negative(optimizer: &'static str, what: &str, value: f64) -> Result<()> {
    check(optimizer, value >= 0.0, || format!("Invalid {what} value: {}", py(value)))
}

/// torch's beta checks, `0.0 <= beta < 1.0` for each.
pub(crate) fn check_betas(optimizer: &'static str, (b1, b2): (f64, f64)) -> Result<()> {
    check(optimizer, (0.0..1.0).contains(&b1), || format!("Invalid beta parameter at index 0: {}", py(b1)))?;
    check(optimizer, (0.0..1.0).contains(&b2), || format!("Invalid beta parameter at index 1: {}", py(b2)))
}

/// The checks every Adam-like optimizer's constructor makes, in torch's order: learning rate,
/// epsilon, betas, weight decay.
pub(crate) fn check_adam_like(
    optimizer: &'static str,
    lr: f64,
    eps: f64,
    betas: (f64, f64),
    weight_decay: f64,
) -> Result<()> {
    check_lr(optimizer, lr)?;
    check_non_negative(optimizer, "epsilon", eps)?;
    check_betas(optimizer, betas)?;
    check_non_negative(optimizer, "weight_decay", weight_decay)
}

/// torch's first lines of every update: `g = -grad if maximize else grad`, then the L2 term
/// `g.add(p, alpha=weight_decay)` (a fused multiply-add in torch's vectorised CPU kernel).
#[inline(always)]
pub(crate) fn direction(maximize: bool, weight_decay: f32, grad: f32, p: f32) -> f32 {
    let d = if maximize { -grad } else { grad };
    if weight_decay != 0.0 { p.mul_add(weight_decay, d) } else { d }
}

/// torch's CPU `a.lerp_(b, w)` (vectorised form, ATen Lerp.h), shared with WGSL `lerp_torch`.
#[inline(always)]
pub(crate) fn lerp(a: f32, b: f32, w: f32) -> f32 {
    if w.abs() < 0.5 { w.mul_add(b - a, a) } else { (w - 1.0).mul_add(b - a, b) }
}

/// Adam's first lines, shared by Adam, NAdam and RAdam (the CPU twin of
/// `shaders/adam_moments.wgsl`): weight decay (decoupled, on the parameter; or L2, into the
/// gradient), the signed direction, and both moments.
#[derive(Clone, Copy)]
pub(crate) struct AdamMoments {
    pub maximize: bool,
    /// Decoupled decay applies (decoupled and weight_decay != 0).
    pub decay_param: bool,
    /// F(1 - lr*wd).
    pub decay: f32,
    /// F(wd) in the L2 form, 0 when decoupled.
    pub l2: f32,
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
}

impl AdamMoments {
    /// From the configuration's flags and the step's f32 scalars.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        maximize: bool,
        decoupled: bool,
        weight_decay: f64,
        decay: f32,
        weight_decay_f32: f32,
        one_minus_beta1: f32,
        beta2: f32,
        one_minus_beta2: f32,
    ) -> Self {
        AdamMoments {
            maximize,
            decay_param: decoupled && weight_decay != 0.0,
            decay,
            l2: if decoupled { 0.0 } else { weight_decay_f32 },
            one_minus_beta1,
            beta2,
            one_minus_beta2,
        }
    }

    /// Updates `m` and `v`; returns (parameter after decoupled decay, direction).
    #[inline(always)]
    pub fn apply(self, p: f32, grad: f32, m: &mut f32, v: &mut f32) -> (f32, f32) {
        let param = if self.decay_param { p * self.decay } else { p };
        let d = direction(self.maximize, self.l2, grad, param);
        *m = lerp(*m, d, self.one_minus_beta1);
        *v = (self.one_minus_beta2 * d).mul_add(d, *v * self.beta2);
        (param, d)
    }
}

/// torch.maximum: NaN-propagating.
#[inline(always)]
pub(crate) fn nan_max(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() { a + b } else { a.max(b) }
}

/// Runs `f(p, g, [s0, s1, …])` on every element, over the first `N` *used* (non-empty)
/// state slots in slot order: an optimizer whose configuration drops a slot (AMSGrad's
/// `v_max`, SGD's momentum) calls it with the `N` of that configuration and a closure
/// over just those slots. Inlined into an optimizer's update, which
/// [`crate::simd::dispatch`] compiles for the best instruction set.
///
/// Index loops over slices cut to one length: no bounds checks, and no iterator adapters
/// left to the inliner, so every update vectorises.
#[inline(always)]
pub(crate) fn each<const N: usize>(
    p: &mut [f32],
    g: &[f32],
    state: StateSlices<'_, '_>,
    mut f: impl FnMut(&mut f32, f32, [&mut f32; N]),
) {
    let n = p.len();
    let g = &g[..n];
    let mut used = state.iter_mut().filter(|s| !s.is_empty());
    let mut s: [&mut [f32]; N] = std::array::from_fn(|_| match used.next() {
        Some(s) => &mut s[..n],
        None => &mut [],
    });
    // The optimizer asked for more slots than its configuration keeps: a bug of this crate.
    assert!(s.iter().all(|s| s.len() == n), "an update over {N} state slots of which fewer are kept");
    for i in 0..n {
        f(&mut p[i], g[i], s.each_mut().map(|s| &mut s[i]));
    }
}

/// The trait methods every optimizer writes the same way: `lr`, `set_lr`, `kernel`,
/// `clone_box`.
macro_rules! common_methods {
    ($kernel:expr) => {
        fn lr(&self) -> f64 {
            self.lr
        }
        fn set_lr(&mut self, lr: f64) {
            self.lr = lr;
        }
        fn kernel(&self) -> &'static $crate::optim::Kernel {
            &$kernel
        }
        fn clone_box(&self) -> Box<dyn $crate::optim::Optimizer> {
            Box::new(self.clone())
        }
        fn config(&self) -> serde_json::Value {
            $crate::optim::config_of(self)
        }
    };
}

/// The trait methods of an optimizer whose every state slot is kept in its `state_format`
/// field: `state_format` and `boxed_with_state_format`.
macro_rules! state_format_methods {
    () => {
        fn state_format(&self, _slot: usize) -> $crate::ElementFormat {
            self.state_format
        }
        fn boxed_with_state_format(&self, format: $crate::ElementFormat) -> Option<Box<dyn $crate::optim::Optimizer>> {
            Some(Box::new(Self { state_format: format, ..self.clone() }))
        }
    };
}
pub(crate) use state_format_methods;

/// The builder method `with_state_format` of an optimizer with a `state_format` field.
macro_rules! with_state_format {
    ($t:ident) => {
        impl $t {
            #[doc = concat!("Keeps every state tensor in `format` (see [`state_format`](", stringify!($t), "::state_format)).")]
            pub fn with_state_format(self, format: $crate::ElementFormat) -> Self {
                $t { state_format: format, ..self }
            }
        }
    };
}
pub(crate) use with_state_format;

/// `momentum` and `set_momentum` on an optimizer whose cycled momentum is `betas.0`.
macro_rules! cycles_beta1 {
    () => {
        fn momentum(&self) -> Option<f64> {
            Some(self.betas.0)
        }
        fn set_momentum(&mut self, momentum: f64) {
            self.betas.0 = momentum;
        }
    };
}
pub(crate) use cycles_beta1;

/// `momentum` and `set_momentum` on an optimizer with a `momentum` field.
macro_rules! cycles_momentum {
    () => {
        fn momentum(&self) -> Option<f64> {
            Some(self.momentum)
        }
        fn set_momentum(&mut self, momentum: f64) {
            self.momentum = momentum;
        }
    };
}
pub(crate) use cycles_momentum;

/// Whether a state format is the default f32 (a configuration's JSON then leaves it out, as
/// it did before 16-bit state existed, so earlier checkpoints still match).
pub(crate) fn is_f32(format: &crate::ElementFormat) -> bool {
    *format == crate::ElementFormat::F32
}

/// A configuration as JSON (serde's field names and values; floats round-trip exactly).
pub(crate) fn config_of<T: serde::Serialize>(config: &T) -> serde_json::Value {
    // Serialising plain structs of numbers and flags cannot fail; NaN becomes null.
    serde_json::to_value(config).unwrap_or_default()
}
pub(crate) use common_methods;

/// Builder methods `with_<field>(value)` for plain fields.
macro_rules! setters {
    ($t:ident { $($name:ident => $field:ident: $ty:ty),* $(,)? }) => {
        impl $t {
            $(
                #[doc = concat!("Sets `", stringify!($field), "`.")]
                pub fn $name(self, $field: $ty) -> Self {
                    $t { $field, ..self }
                }
            )*
        }
    };
}
pub(crate) use setters;

/// Python's `bool` spelling, for constants.
pub(crate) fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}
