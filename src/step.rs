//! The step model: an optimizer's step as a short list of stages, which the engine records
//! as dispatches (every tensor of every group, K steps per submit) and the CPU runs
//! in the same order.
//!
//! * [`Stage::Elementwise`]: each element of the parameters and state updated from its own
//!   values, the step's scalars and what earlier reductions found (the shader's `update`,
//!   the CPU's [`Optimizer::update_cpu`](crate::Optimizer::update_cpu) or
//!   [`Optimizer::apply_cpu`](crate::Optimizer::apply_cpu)). SGD … Adan are this alone.
//! * [`Stage::Reduce`]: element-wise work that also returns up to four terms per element
//!   (‖p‖², ‖u‖², …), summed over a [`Scope`] by a fixed-order tree, so the stages after it
//!   read per-tensor values (the shader's `reduce_update` and `reduced()`, the CPU's
//!   [`Optimizer::reduce_cpu`](crate::Optimizer::reduce_cpu)). LAMB is a reduction and an
//!   element-wise stage.
//! * A reduction over [`Scope::Rows`] or [`Scope::Columns`] follows the parameter's shape
//!   (given per parameter; flat by default) and writes state of another length than the
//!   parameter (Adafactor's `row_var` and `col_var`). Such a step is the family's own entry
//!   points on the GPU (those of shaders/adafactor.wgsl, bound as `crate::factored` binds
//!   them) and [`Optimizer::shaped_cpu`](crate::Optimizer::shaped_cpu) on the CPU.
//! * A reduction over [`Scope::Block`] combines each block of a fixed number of elements on
//!   its own, by sum ([`Stage::Reduce`]) or by maximum ([`Stage::ReduceMax`]: absmax, what
//!   8-bit blockwise state scales by); the stages after it read their block's terms (the
//!   shader's `block_reduced(i)`, the CPU's `apply_cpu` run block by block).
//! * [`Stage::MatMul`]: matrix products tiled in workgroup memory (Muon's Newton–Schulz): a
//!   shaped step, the family's own entry points on the GPU (shaders/muon.wgsl, bound as
//!   `crate::newton_schulz` binds them) and [`Optimizer::shaped_cpu`](crate::Optimizer::shaped_cpu)
//!   on the CPU.

/// What a reduction sums over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scope {
    /// Each parameter tensor of a group on its own (LAMB's and LARS's trust ratios).
    Tensor,
    /// Every tensor of the group together.
    Group,
    /// Each row of a tensor's trailing matrix (the last dimension summed): Adafactor's
    /// `row_var`. The tensor's shape is given per parameter.
    Rows,
    /// Each column of a tensor's trailing matrix (the second-to-last dimension summed):
    /// Adafactor's `col_var`.
    Columns,
    /// Each block of this many consecutive elements of a tensor (a multiple of 4; the last
    /// block of a tensor may be shorter): 8-bit blockwise state's absmax, blockwise norms.
    Block(u32),
}

impl Scope {
    /// Whether the reduction follows the tensor's shape, not only its elements.
    pub fn is_shaped(self) -> bool {
        matches!(self, Scope::Rows | Scope::Columns)
    }
}

/// One stage of an optimizer's step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// Every element from its own values.
    Elementwise,
    /// Element-wise work whose per-element terms are summed over a scope.
    Reduce(Scope),
    /// Element-wise work whose per-element terms (≥ 0, such as |x|) are combined by maximum
    /// over a scope: absmax. Over [`Scope::Block`].
    ReduceMax(Scope),
    /// Matrix products over each parameter's matrix.
    MatMul,
}

/// The stages of an element-wise optimizer.
pub const ELEMENTWISE: &[Stage] = &[Stage::Elementwise];

/// Terms a reduction stage returns per element (a `vec4<f32>` in WGSL).
pub const REDUCED_TERMS: usize = 4;

/// Elements the CPU sums as one f64 partial before adding partials in order: a fixed
/// chunking, so the sequential reference and the parallel baseline give the same bits.
pub(crate) const CPU_REDUCE_CHUNK: usize = 1 << 14;

/// The block size of a step's per-block reduction and whether it takes maxima, if it has one.
pub(crate) fn block_reduction(stages: &[Stage]) -> Option<(u32, bool)> {
    stages.iter().find_map(|s| match s {
        Stage::Reduce(Scope::Block(b)) => Some((*b, false)),
        Stage::ReduceMax(Scope::Block(b)) => Some((*b, true)),
        _ => None,
    })
}

/// Whether both sides run `stages`: element-wise stages and at most one reduction (over a
/// tensor, the group or blocks of a tensor; maxima over blocks), or a shaped step's row and
/// column reductions or matrix products (the family's own entry points on the GPU, its
/// [`Optimizer::shaped_cpu`](crate::Optimizer::shaped_cpu) on the CPU).
pub(crate) fn check_supported(family: &str, stages: &[Stage]) -> crate::Result<()> {
    let refuse = |what: String| Err(crate::Error::Unsupported(format!("{family}: {what}")));
    let shaped = stages.iter().any(|s| matches!(s, Stage::Reduce(scope) if scope.is_shaped()));
    let mut reductions = 0;
    for stage in stages {
        match stage {
            Stage::Elementwise => {}
            Stage::Reduce(Scope::Rows | Scope::Columns) => {}
            Stage::Reduce(Scope::Tensor | Scope::Group) => reductions += 1,
            Stage::Reduce(Scope::Block(b)) | Stage::ReduceMax(Scope::Block(b)) => {
                if *b == 0 || b % 4 != 0 {
                    return refuse(format!("blocks of {b} elements; a block is a positive multiple of 4"));
                }
                reductions += 1;
            }
            Stage::ReduceMax(scope) => {
                return refuse(format!("maxima over {scope:?}; the engine takes maxima over blocks"));
            }
            Stage::MatMul => {}
        }
    }
    if reductions > 1 && !shaped {
        return refuse(format!("a step with {reductions} reduction stages; the engine records one per step"));
    }
    Ok(())
}
