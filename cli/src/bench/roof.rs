//! Each side's memory roof, measured in the same run as the step and in turn with it (see
//! [`super::timing`]): the bytes per second of the step's own memory traffic with no
//! arithmetic.

use crate::error::Result;
use rayon::prelude::*;
use wgpu_optim::gpu::GpuContext;
use wgpu_optim::optim::Optimizer;
use wgpu_optim::tensor::GpuTensor;

use super::Mode;
use super::run::GpuClock;
use super::timing::{Timed, timed};

/// Largest copy the GPU roof measures: beyond a few GiB a copy's bandwidth is flat, and a
/// model-sized copy would need twice the model's memory again.
const MAX_ROOF_BYTES: u64 = 4 << 30;

/// Copies per submit of the GPU roof.
const COPIES: u32 = 8;

/// The GPU's memory roof for a step moving `bytes`: a buffer-to-buffer copy of `bytes / 2`
/// (read + write = `bytes`; at most 4 GiB), the same traffic with no arithmetic.
pub struct GpuCopy {
    ctx: GpuContext,
    from: GpuTensor,
    to: GpuTensor,
}

impl GpuCopy {
    /// Allocates the two buffers and runs one submit of copies (first-use costs).
    pub fn new(ctx: &GpuContext, clock: &GpuClock, bytes: u64) -> Result<Self> {
        let len = (bytes.min(MAX_ROOF_BYTES) / 8).max(4) as usize;
        let copy = GpuCopy { ctx: ctx.clone(), from: GpuTensor::zeros(ctx, len)?, to: GpuTensor::zeros(ctx, len)? };
        copy.submit(clock)?;
        Ok(copy)
    }

    /// Bytes one copy reads and writes.
    pub fn bytes_per_copy(&self) -> f64 {
        8.0 * self.from.len() as f64
    }

    /// One submit of [`COPIES`] copies, timed by `clock` as the step is.
    fn submit(&self, clock: &GpuClock) -> Result<f64> {
        clock.time(&self.ctx, |e| {
            for _ in 0..COPIES {
                for (s, d) in self.from.segments().iter().zip(self.to.segments()) {
                    e.copy_buffer_to_buffer(&s.buffer, s.offset, &d.buffer, d.offset, s.len as u64 * 4);
                }
            }
            Ok(())
        })
    }

    /// The copy as one side of an interleaved measurement (seconds per copy), timed by
    /// `clock` as the step is.
    pub fn timed<'a>(&'a self, clock: &'a GpuClock) -> Timed<impl FnMut() -> Result<f64> + 'a> {
        Timed { run: move || self.submit(clock), units: COPIES }
    }
}

/// Elements per leaf of the roof's parallel split, as the CPU baseline's.
const LEAF: usize = 1 << 14;
/// Elements of g every tensor adds before the next block (1 KiB).
const BLOCK: usize = 256;

/// The CPU's memory roof for `o` at `n` parameters, on the current rayon pool: `p += g` and
/// `s += g` for every state tensor `o` uses, leaf by leaf across the threads as the baseline
/// splits its step, g read once per block — the step's own memory traffic, in place, with no
/// arithmetic. (A copy into a separate array would pay write-allocate traffic the step does
/// not.)
pub struct CpuPass {
    g: Vec<f32>,
    tensors: Vec<Vec<f32>>,
    bytes: f64,
}

impl CpuPass {
    /// Allocates the arrays of `o`'s step in `mode` (the CPU keeps f32 values of every
    /// format: the parameters, the state in use, the master weights) and runs one pass (first
    /// touch of the pages).
    pub fn new(o: &dyn Optimizer, mode: &Mode, n: usize) -> Result<Self> {
        let mut pass = CpuPass {
            g: vec![1.0; n],
            tensors: vec![vec![0.0; n]; mode.cpu_tensors(o)],
            bytes: mode.cpu_bytes(o, &[n]) as f64,
        };
        pass.run()?;
        Ok(pass)
    }

    /// Bytes one pass moves (the step's).
    pub fn bytes_per_pass(&self) -> f64 {
        self.bytes
    }

    fn run(&mut self) -> Result<f64> {
        let (g, tensors) = (&self.g, &mut self.tensors);
        timed(|| {
            let mut leaves: Vec<Vec<&mut [f32]>> = (0..g.len().div_ceil(LEAF)).map(|_| Vec::new()).collect();
            for t in tensors.iter_mut() {
                for (leaf, chunk) in leaves.iter_mut().zip(t.chunks_mut(LEAF)) {
                    leaf.push(chunk);
                }
            }
            leaves.into_par_iter().zip(g.par_chunks(LEAF)).for_each(|(mut xs, g)| add_leaf(&mut xs, g));
            Ok(())
        })
    }

    /// The pass as one side of an interleaved measurement (seconds per pass).
    pub fn timed(&mut self) -> Timed<impl FnMut() -> Result<f64> + '_> {
        Timed { run: move || self.run(), units: 1 }
    }
}

/// `x += g` for every `x` of one leaf, a block at a time: every tensor over one block of g
/// before the next, so g comes from memory once (later tensors find it in L1), as the step
/// reads it once, and every tensor streams through memory alongside the others. Compiled
/// with AVX2 where the CPU has it, as the step's loops are.
fn add_leaf(xs: &mut [&mut [f32]], g: &[f32]) {
    #[inline(always)]
    fn add(xs: &mut [&mut [f32]], g: &[f32]) {
        for (at, g) in (0..).step_by(BLOCK).zip(g.chunks(BLOCK)) {
            for x in xs.iter_mut() {
                for (x, y) in x[at..at + g.len()].iter_mut().zip(g) {
                    *x += y;
                }
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        fn add_avx2(xs: &mut [&mut [f32]], g: &[f32]) {
            add(xs, g)
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { add_avx2(xs, g) };
        }
    }
    add(xs, g)
}
