//! Muon's step on the GPU against the CPU reference, interleaved in the same run, on GPT-2's
//! matrix shapes: milliseconds per step (median and quartiles), Newton–Schulz's GFLOP/s on
//! each side, and Muon's step per GPT-2 (124M) step — its 48 block matrices — from the
//! shapes' medians.
//!
//! Run: `cargo run --release -p wgpu-optim-cli --example muon_step [-- ROWSxCOLS ...]`
//! (default: GPT-2's 768x2304, 768x768, 768x3072 and 3072x768). The CPU side is
//! `CpuOptimizer`, whose products are ndarray's (matrixmultiply) GEMM on one thread.

use std::time::Duration;

use wgpu_optim::{CpuOptimizer, GpuContext, GpuOptimizer, Muon};
use wgpu_optim_cli::bench::timing::{Timed, interleaved, timed};

/// GPT-2 124M's matrices in one transformer block (attention in and out, MLP in and out);
/// twelve blocks.
const GPT2_BLOCK: [(usize, usize); 4] = [(768, 2304), (768, 768), (768, 3072), (3072, 768)];
const GPT2_BLOCKS: usize = 12;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let shapes: Vec<(usize, usize)> = std::env::args()
        .skip(1)
        .map(|a| {
            let (r, c) = a.split_once('x').ok_or_else(|| format!("{a}: a shape is ROWSxCOLS"))?;
            Ok((r.parse()?, c.parse()?))
        })
        .collect::<Result<_, Box<dyn std::error::Error>>>()?;
    let gpt2 = shapes.is_empty();
    let shapes = if gpt2 { GPT2_BLOCK.to_vec() } else { shapes };
    let ctx = GpuContext::new()?;
    let muon = Muon::new(0.02);
    println!(
        "Muon (bf16 Newton–Schulz, {} iterations) on {}, GPU against the CPU reference, interleaved",
        muon.ns_steps,
        ctx.adapter_info().name
    );
    println!(
        "{:>11} {:>22} {:>22} {:>10} {:>10} {:>8}",
        "shape", "GPU ms/step [IQR]", "CPU ms/step [IQR]", "GPU GF/s", "CPU GF/s", "GPU/CPU"
    );
    let mut per_gpt2 = (0.0, 0.0);
    for &(rows, cols) in &shapes {
        let n = rows * cols;
        let params: Vec<f32> = (0..n).map(|i| ((i * 7919 % 2001) as f32 - 1000.0) / 512.0).collect();
        let grads: Vec<f32> = (0..n).map(|i| ((i * 104_729 % 2001) as f32 - 1000.0) / 1024.0).collect();
        let mut gpu = GpuOptimizer::with_shape(&ctx, muon.clone(), &params, &[rows, cols])?;
        gpu.grads().write(&ctx, &grads)?;
        let mut cpu = CpuOptimizer::with_shape(muon.clone(), &params, &[rows, cols])?;
        // One step each first: pipelines compiled, buffers touched.
        gpu.run(1)?;
        gpu.read_gpu_step()?;
        cpu.step(&grads)?;
        let cpu_step = Timed { run: || timed(|| Ok(cpu.step(&grads)?)), units: 1 };
        let gpu_step = Timed {
            run: || {
                timed(|| {
                    gpu.run(1)?;
                    gpu.read_gpu_step()?; // waits for the GPU
                    Ok(())
                })
            },
            units: 1,
        };
        let m = interleaved(5, Duration::from_secs(2), cpu_step, gpu_step)?;
        let (m_, n_) = (rows.min(cols) as f64, rows.max(cols) as f64);
        // Per iteration: X Xᵀ and A' X (2 m² n each), A A (2 m³).
        let flops = f64::from(muon.ns_steps) * (4.0 * m_ * m_ * n_ + 2.0 * m_ * m_ * m_);
        let (g, c) = (m.step.median(), m.roof.median());
        let (gq, cq) = (m.step.quartiles(), m.roof.quartiles());
        println!(
            "{:>11} {:>8.2} [{:.2}–{:.2}] {:>8.2} [{:.2}–{:.2}] {:>10.1} {:>10.1} {:>7.2}×",
            format!("{rows}x{cols}"),
            g * 1e3,
            gq.0 * 1e3,
            gq.1 * 1e3,
            c * 1e3,
            cq.0 * 1e3,
            cq.1 * 1e3,
            flops / g / 1e9,
            flops / c / 1e9,
            c / g
        );
        per_gpt2 = (per_gpt2.0 + g, per_gpt2.1 + c);
    }
    if gpt2 {
        let blocks = GPT2_BLOCKS as f64;
        println!(
            "Muon's step over GPT-2 124M's {} block matrices, from the medians: GPU {:.1} ms, CPU {:.1} ms",
            GPT2_BLOCKS * GPT2_BLOCK.len(),
            per_gpt2.0 * blocks * 1e3,
            per_gpt2.1 * blocks * 1e3
        );
    }
    Ok(())
}
