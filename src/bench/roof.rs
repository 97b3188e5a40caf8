//! Each side's memory roof, measured in the same run as the step: the bytes per second of
//! the step's own memory traffic with no arithmetic.

use std::time::{Duration, Instant};

use crate::cpu::parallel_split;
use crate::error::Result;
use crate::gpu::GpuContext;
use crate::optim::{MAX_STATE, Optimizer, StateSlices};
use crate::tensor::GpuTensor;

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
            ctx.wait()
        })
    };
    run()?;
    let secs = best_of(3, Duration::from_millis(500), copies, run)?;
    Ok(8.0 * len as f64 / secs)
}

/// The CPU's memory roof for `o` at `n` parameters, on the current rayon pool: bytes per
/// second of `p += g` and `s += g` for every state tensor `o` uses — the step's own memory
/// traffic, in place, through the same parallel split as the baseline, with no arithmetic.
/// (A copy into a separate array would pay write-allocate traffic the step does not.)
pub fn cpu_roof(o: &dyn Optimizer, n: usize) -> Result<f64> {
    let g = vec![1.0f32; n];
    let mut p = vec![0.0f32; n];
    let states = (0..o.kernel().state.len()).filter(|&i| o.uses_state(i)).count();
    let mut state: [Vec<f32>; MAX_STATE] = std::array::from_fn(|i| vec![0.0f32; if i < states { n } else { 0 }]);
    let add = |p: &mut [f32], g: &[f32], s: StateSlices<'_>| {
        for x in std::iter::once(p).chain(s) {
            for (x, y) in x.iter_mut().zip(g) {
                *x += y;
            }
        }
    };
    let mut run = || {
        timed(|| {
            parallel_split(&mut p, &g, state.each_mut().map(|s| s.as_mut_slice()), &add);
            Ok(())
        })
    };
    run()?;
    let secs = best_of(3, Duration::from_millis(500), 1, &mut run)?;
    Ok(bytes_per_param(o) as f64 * n as f64 / secs)
}
