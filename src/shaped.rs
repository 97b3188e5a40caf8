//! A shaped step over one tensor, whichever its family's entries: reductions over rows and
//! columns ([`crate::factored`], Adafactor) or matrix products ([`crate::newton_schulz`],
//! Muon). The GPU optimizer holds one per tensor and records them in order.

use crate::error::Result;
use crate::factored::{self, Bound, FactoredStep};
use crate::gpu::GpuContext;
use crate::newton_schulz::{self, NewtonSchulzStep};
use crate::optim::Optimizer;
use crate::step::Stage;
use crate::tensor::GpuTensor;

pub(crate) enum ShapedStep {
    Factored(FactoredStep),
    NewtonSchulz(NewtonSchulzStep),
}

pub(crate) enum Rebuilt {
    Factored(factored::Rebuilt),
    NewtonSchulz(newton_schulz::Rebuilt),
}

impl ShapedStep {
    /// The step of `optimizer` over one tensor of `shape`, with the state tensors of every
    /// slot of its kernel (`None` where this shape keeps none).
    pub fn new(
        ctx: &GpuContext,
        optimizer: &dyn Optimizer,
        tensors: (&GpuTensor, &GpuTensor),
        shape: &[usize],
        bound: Bound<'_>,
        constants: &[(&'static str, f64)],
    ) -> Result<(Self, Vec<Option<GpuTensor>>)> {
        if optimizer.kernel().stages.contains(&Stage::MatMul) {
            let (step, state) = NewtonSchulzStep::new(ctx, optimizer, tensors, shape, bound, constants)?;
            Ok((ShapedStep::NewtonSchulz(step), state))
        } else {
            let (step, state) = FactoredStep::new(ctx, optimizer, tensors, shape, bound, constants)?;
            Ok((ShapedStep::Factored(step), state))
        }
    }

    pub fn rebuilt(&self, ctx: &GpuContext, constants: &[(&'static str, f64)], bound: Bound<'_>) -> Result<Rebuilt> {
        Ok(match self {
            ShapedStep::Factored(s) => Rebuilt::Factored(s.rebuilt(ctx, constants, bound)?),
            ShapedStep::NewtonSchulz(s) => Rebuilt::NewtonSchulz(s.rebuilt(ctx, constants, bound)?),
        })
    }

    /// Puts what [`rebuilt`](Self::rebuilt) made for this step in place.
    pub fn install(&mut self, rebuilt: Rebuilt) {
        match (self, rebuilt) {
            (ShapedStep::Factored(s), Rebuilt::Factored(r)) => s.install(r),
            (ShapedStep::NewtonSchulz(s), Rebuilt::NewtonSchulz(r)) => s.install(r),
            // `rebuilt` of this step made it: the kinds match.
            _ => {}
        }
    }

    pub fn advance_pipeline(&self) -> &wgpu::ComputePipeline {
        match self {
            ShapedStep::Factored(s) => s.advance_pipeline(),
            ShapedStep::NewtonSchulz(s) => s.advance_pipeline(),
        }
    }

    pub fn record_stages(&self, pass: &mut wgpu::ComputePass<'_>, parity: usize, stamp: u32) {
        match self {
            ShapedStep::Factored(s) => s.record_stages(pass, parity, stamp),
            ShapedStep::NewtonSchulz(s) => s.record_stages(pass, parity, stamp),
        }
    }
}
