//! Agreement between the GPU and the CPU reference, in units of f32 epsilon times the scale
//! an update's rounding grows with.

use crate::error::Result;
use wgpu_optim::cpu::{CpuOptimizer, Threads};
use wgpu_optim::gpu::GpuContext;
use wgpu_optim::gpu_optimizer::GpuOptimizer;
use wgpu_optim::optim::Optimizer;

/// Largest absolute element-wise difference.
pub fn max_change(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The worst element of `got` against `want` (index, error) in units of f32 epsilon times
/// (|want| + `change`): the scale rounding errors of an update grow with. NaN where exactly
/// one side is NaN.
pub fn worst_error(got: &[f32], want: &[f32], change: f32) -> (usize, f64) {
    let mut worst = (0, 0.0f64);
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        if a.is_nan() && b.is_nan() {
            continue;
        }
        let scale = f64::from(b.abs() + change) * f64::from(f32::EPSILON);
        let err = f64::from((a - b).abs()) / scale.max(f64::MIN_POSITIVE);
        if err.is_nan() || err > worst.1 {
            worst = (i, err);
            if err.is_nan() {
                break;
            }
        }
    }
    worst
}

/// One optimizer's GPU-vs-CPU agreement after some steps: the worst error over the
/// parameters and every state tensor, in ε·scale, and the largest |Δp|.
#[derive(Clone, Debug)]
pub struct Agreement {
    /// Worst error, ε·scale (scale = |value| + its largest per-step change).
    pub worst: f64,
    /// Largest absolute parameter difference.
    pub max_abs: f32,
}

/// Runs `steps` steps of `opt` on both sides with per-step gradients and compares.
pub fn agreement(
    ctx: &GpuContext,
    opt: &dyn Optimizer,
    params: &[f32],
    grads: &[f32],
    steps: u32,
) -> Result<Agreement> {
    let mut gpu = GpuOptimizer::new(ctx, opt.clone_box(), params)?;
    let mut cpu = CpuOptimizer::new(opt.clone_box(), params)?.with_threads(Threads::Parallel);
    let names: Vec<&str> = cpu.state().map(|(s, _)| s.torch_name).collect();
    let snapshot = |cpu: &CpuOptimizer| -> Vec<Vec<f32>> {
        std::iter::once(cpu.params().to_vec())
            .chain(names.iter().filter_map(|n| cpu.state_tensor(n)).map(|t| t.to_vec()))
            .collect()
    };
    let mut change = vec![0.0f32; names.len() + 1];
    let mut g = grads.to_vec();
    for k in 0..steps {
        // A different gradient each step: rotate by a step-dependent amount.
        let shift = (k as usize * 7919) % g.len().max(1);
        g.rotate_left(shift);
        let before = snapshot(&cpu);
        gpu.step(&g)?;
        cpu.step(&g)?;
        for (c, (a, b)) in change.iter_mut().zip(before.iter().zip(snapshot(&cpu))) {
            *c = c.max(max_change(a, &b));
        }
    }
    let after = snapshot(&cpu);
    let got_p = gpu.read_params()?;
    let got_p = got_p.as_slice().unwrap_or(&[]);
    let mut worst = worst_error(got_p, &after[0], change[0]).1;
    for (j, name) in names.iter().enumerate() {
        let got = gpu.read_state(name)?;
        worst = worst.max(worst_error(got.as_slice().unwrap_or(&[]), &after[j + 1], change[j + 1]).1);
    }
    Ok(Agreement { worst, max_abs: max_change(got_p, &after[0]) })
}
