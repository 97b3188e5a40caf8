//! This crate's CPU baseline alone: AdamW (lr 1e-3, weight decay 1e-2, as
//! scripts/cpu_adamw_bench.py gives torch and DeepSpeed) on one tensor, on rayon's pool
//! (RAYON_NUM_THREADS sets its size), for the script to time back to back with them.
//!
//!     cargo run --release --example cpu_adamw -- [LOG2_N] [STEPS]
//!
//! Prints the seconds of each step, one per line, after one untimed step.

use wgpu_optim::{AdamW, CpuOptimizer, Threads};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let log2: u32 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(26);
    let steps: u32 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let n = 1usize << log2;
    let p: Vec<f32> = (0..n).map(|i| ((i as f32) * 1e-3).sin()).collect();
    let g: Vec<f32> = (0..n).map(|i| ((i as f32) * 7e-3).cos()).collect();
    let mut cpu = CpuOptimizer::new(AdamW::new(1e-3).with_weight_decay(1e-2), &p)?.with_threads(Threads::Parallel);
    cpu.step(&g)?;
    for _ in 0..steps {
        let t = std::time::Instant::now();
        cpu.step(&g)?;
        println!("{}", t.elapsed().as_secs_f64());
    }
    Ok(())
}
