//! Each side's memory roof, measured in the same run as the step: the bytes per second of
//! the step's own memory traffic with no arithmetic.

use std::time::{Duration, Instant};

use crate::error::Result;
use rayon::prelude::*;
use wgpu_optim::gpu::GpuContext;
use wgpu_optim::optim::Optimizer;
use wgpu_optim::tensor::GpuTensor;

use super::bytes_per_param;

/// Largest copy the GPU roof measures: beyond a few GiB a copy's bandwidth is flat, and a
/// model-sized copy would need twice the model's memory again.
const MAX_ROOF_BYTES: u64 = 4 << 30;

/// Repeats `f` (which does `per_call` units of work and returns the seconds it took) until
/// `min_time` has passed and at least `min_reps` calls were made; returns the best seconds
/// per unit.
pub(crate) fn best_of(
    min_reps: usize,
    min_time: Duration,
    per_call: u32,
    mut f: impl FnMut() -> Result<f64>,
) -> Result<f64> {
    let start = Instant::now();
    let mut best = f64::INFINITY;
    let mut reps = 0;
    while reps < min_reps || start.elapsed() < min_time {
        best = best.min(f()? / f64::from(per_call));
        reps += 1;
    }
    Ok(best)
}

/// Wall-clock seconds of `f`.
pub(crate) fn timed(f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64())
}

/// The GPU's memory roof for a step moving `bytes`: bytes per second of a buffer-to-buffer
/// copy of `bytes / 2` (read + write = `bytes`; at most 4 GiB), the same traffic with no
/// arithmetic.
pub fn gpu_copy_roof(ctx: &GpuContext, bytes: u64) -> Result<f64> {
    let len = (bytes.min(MAX_ROOF_BYTES) / 8).max(4) as usize;
    let a = GpuTensor::zeros(ctx, len)?;
    let b = GpuTensor::zeros(ctx, len)?;
    let copies = 8;
    let run = || {
        timed(|| {
            ctx.scoped("measuring copy bandwidth", || {
                let mut e = ctx.device().create_command_encoder(&Default::default());
                for _ in 0..copies {
                    for (s, d) in a.segments().iter().zip(b.segments()) {
                        e.copy_buffer_to_buffer(&s.buffer, s.offset, &d.buffer, d.offset, s.len as u64 * 4);
                    }
                }
                ctx.queue().submit([e.finish()]);
            })?;
            Ok(ctx.wait()?)
        })
    };
    run()?;
    let secs = best_of(3, Duration::from_millis(500), copies, run)?;
    Ok(8.0 * len as f64 / secs)
}

/// Elements per leaf of the roof's parallel split, as the CPU baseline's.
const LEAF: usize = 1 << 14;

/// The CPU's memory roof for `o` at `n` parameters, on the current rayon pool: bytes per
/// second of `p += g` and `s += g` for every state tensor `o` uses, leaf by leaf across the
/// threads as the baseline splits its step — the step's own memory traffic, in place, with
/// no arithmetic. (A copy into a separate array would pay write-allocate traffic the step
/// does not.)
pub fn cpu_roof(o: &dyn Optimizer, n: usize) -> Result<f64> {
    let g = vec![1.0f32; n];
    let states = (0..o.kernel().state.len()).filter(|&i| o.uses_state(i)).count();
    let mut tensors = vec![vec![0.0f32; n]; 1 + states];
    let mut run = || {
        timed(|| {
            let mut leaves: Vec<Vec<&mut [f32]>> = (0..n.div_ceil(LEAF)).map(|_| Vec::new()).collect();
            for t in &mut tensors {
                for (leaf, chunk) in leaves.iter_mut().zip(t.chunks_mut(LEAF)) {
                    leaf.push(chunk);
                }
            }
            leaves.into_par_iter().zip(g.par_chunks(LEAF)).for_each(|(xs, g)| {
                for x in xs {
                    for (x, y) in x.iter_mut().zip(g) {
                        *x += y;
                    }
                }
            });
            Ok(())
        })
    };
    run()?;
    let secs = best_of(3, Duration::from_millis(500), 1, &mut run)?;
    Ok(bytes_per_param(o) as f64 * n as f64 / secs)
}
