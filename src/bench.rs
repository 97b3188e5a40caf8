//! Honest throughput measurement: the same optimizer step on the GPU and on the CPU
//! (sequential reference and parallel baseline), each reported as GB/s against that side's
//! own measured memory roof, and only after the GPU result has been checked against the CPU.

use std::time::{Duration, Instant};

use crate::cpu::{CpuOptimizer, Threads, parallel_split};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::gpu_optimizer::{GpuOptimizer, SCALAR_SLOTS};
use crate::optim::{MAX_STATE, Optimizer, StateSlices};
use crate::tensor::GpuTensor;

/// Bytes one step moves per parameter: p is read and written, g read, every state tensor
/// in use read and written; f32 throughout (AdamW: 7 × 4 = 28).
pub fn bytes_per_param(o: &dyn Optimizer) -> u64 {
    let states = (0..o.kernel().state.len()).filter(|&i| o.uses_state(i)).count() as u64;
    4 * (3 + 2 * states)
}

/// Which implementation a measurement is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The WGSL kernel on the adapter.
    Gpu,
    /// The CPU reference, one thread.
    CpuSequential,
    /// The CPU baseline on all threads of the rayon pool.
    CpuParallel,
}

impl Side {
    /// Table label.
    pub fn label(self) -> &'static str {
        match self {
            Side::Gpu => "GPU",
            Side::CpuSequential => "CPU sequential",
            Side::CpuParallel => "CPU parallel",
        }
    }
}

/// One measured configuration.
#[derive(Clone, Debug)]
pub struct Measurement {
    /// Optimizer name.
    pub optimizer: String,
    /// Parameters per step.
    pub params: usize,
    /// Implementation.
    pub side: Side,
    /// Best (lowest) time per step over the repetitions.
    pub seconds_per_step: f64,
    /// Bytes moved per step.
    pub bytes_per_step: u64,
    /// This side's measured copy bandwidth, bytes/s (read + write).
    pub roof_bytes_per_second: f64,
}

impl Measurement {
    /// Achieved bandwidth, GB/s (10^9 bytes).
    pub fn gb_per_second(&self) -> f64 {
        self.bytes_per_step as f64 / self.seconds_per_step / 1e9
    }
    /// Fraction of this side's copy roof.
    pub fn roof_fraction(&self) -> f64 {
        self.bytes_per_step as f64 / self.seconds_per_step / self.roof_bytes_per_second
    }
    /// Parameters updated per second.
    pub fn params_per_second(&self) -> f64 {
        self.params as f64 / self.seconds_per_step
    }
}

/// Repeats `f` (which does `per_call` units of work) until `min_time` has passed and at
/// least `min_reps` calls were made; returns the best seconds per unit.
fn best_of(min_reps: usize, min_time: Duration, per_call: u32, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let start = Instant::now();
    let mut best = f64::INFINITY;
    let mut reps = 0;
    while reps < min_reps || start.elapsed() < min_time {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64() / f64::from(per_call));
        reps += 1;
    }
    Ok(best)
}

/// The GPU's memory roof for a step moving `bytes`: bytes per second of a buffer-to-buffer
/// copy of `bytes / 2` (read + write = `bytes`), the same traffic with no arithmetic.
pub fn gpu_copy_roof(ctx: &GpuContext, bytes: u64) -> Result<f64> {
    let len = (bytes / 8).max(4) as usize;
    let a = GpuTensor::zeros(ctx, len)?;
    let b = GpuTensor::zeros(ctx, len)?;
    let copies = 8;
    let run = || {
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
        parallel_split(&mut p, &g, state.each_mut().map(|s| s.as_mut_slice()), &add);
        Ok(())
    };
    run()?;
    let secs = best_of(3, Duration::from_millis(500), 1, &mut run)?;
    Ok(bytes_per_param(o) as f64 * n as f64 / secs)
}

/// Deterministic, varied inputs for benchmarking: parameters in [-2, 2), gradients in [-1, 1).
pub fn inputs(n: usize) -> (Vec<f32>, Vec<f32>) {
    let hash = |i: usize, salt: u64| {
        let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt;
        x ^= x >> 31;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 29;
        (x >> 40) as f32 / (1u64 << 24) as f32 // [0, 1)
    };
    ((0..n).map(|i| 4.0 * hash(i, 1) - 2.0).collect(), (0..n).map(|i| 2.0 * hash(i, 2) - 1.0).collect())
}

/// GPU result check: one step on each side from the same inputs must agree within the
/// GPU's error budget (WGSL's stated precision: `/` 2.5 ulp, `sqrt` 4.5 ulp, unfused `fma`)
/// relative to |p| plus the step's largest change. A bench never reports a speed for a
/// wrong result.
pub fn check_gpu(ctx: &GpuContext, opt: &dyn Optimizer, params: &[f32], grads: &[f32]) -> Result<f64> {
    let mut gpu = GpuOptimizer::new(ctx, opt.clone_box(), params)?;
    let mut cpu = CpuOptimizer::new(opt.clone_box(), params)?.with_threads(Threads::Parallel);
    gpu.step(grads)?;
    cpu.step(grads)?;
    let got = gpu.read_params()?;
    let want = cpu.params().as_slice().unwrap_or(&[]);
    let (i, worst) = worst_error(got.as_slice().unwrap_or(&[]), want, max_change(params, want));
    if worst.is_nan() || worst > f64::from(opt.kernel().step_error_budget) {
        return Err(Error::Wgpu {
            during: "checking the GPU result",
            message: format!(
                "{}: element {i} is {:e} on the GPU and {:e} on the CPU ({worst:.1} ε·scale); no speed is reported for a wrong result",
                opt.name(),
                got[i],
                want[i]
            ),
        });
    }
    Ok(worst)
}

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

/// Times `steps_per_submit` GPU steps per submit (all inside one compute pass) on
/// resident gradients, wall-clock from submit to completion.
pub fn time_gpu(
    ctx: &GpuContext,
    opt: &dyn Optimizer,
    params: &[f32],
    grads: &[f32],
    steps_per_submit: u32,
) -> Result<f64> {
    let k = steps_per_submit.clamp(1, SCALAR_SLOTS);
    let mut gpu = GpuOptimizer::new(ctx, opt.clone_box(), params)?;
    gpu.grads().write(ctx, grads)?;
    let mut run = || {
        gpu.run(k)?;
        ctx.wait()
    };
    run()?; // warm-up: first-use costs (pipeline, memory residency)
    best_of(3, Duration::from_millis(500), k, run)
}

/// Times CPU steps with `threads`.
pub fn time_cpu(opt: &dyn Optimizer, params: &[f32], grads: &[f32], threads: Threads) -> Result<f64> {
    let mut cpu = CpuOptimizer::new(opt.clone_box(), params)?.with_threads(threads);
    cpu.step(grads)?;
    best_of(3, Duration::from_millis(500), 1, || cpu.step(grads))
}

/// A markdown table of measurements.
pub fn markdown(rows: &[Measurement]) -> String {
    let mut s = String::from(
        "| optimizer | params | side | ms/step | Gparam/s | GB/s | roof GB/s | % of roof |\n|---|---:|---|---:|---:|---:|---:|---:|\n",
    );
    for m in rows {
        s += &format!(
            "| {} | 2^{} | {} | {:.3} | {:.3} | {:.1} | {:.1} | {:.0} % |\n",
            m.optimizer,
            m.params.ilog2(),
            m.side.label(),
            m.seconds_per_step * 1e3,
            m.params_per_second() / 1e9,
            m.gb_per_second(),
            m.roof_bytes_per_second / 1e9,
            100.0 * m.roof_fraction()
        );
    }
    s
}

/// Measurements as JSON (an array of objects).
pub fn json(rows: &[Measurement]) -> serde_json::Value {
    serde_json::Value::Array(
        rows.iter()
            .map(|m| {
                serde_json::json!({
                    "optimizer": m.optimizer,
                    "params": m.params,
                    "side": m.side.label(),
                    "seconds_per_step": m.seconds_per_step,
                    "bytes_per_step": m.bytes_per_step,
                    "gb_per_second": m.gb_per_second(),
                    "roof_gb_per_second": m.roof_bytes_per_second / 1e9,
                    "roof_fraction": m.roof_fraction(),
                })
            })
            .collect(),
    )
}
