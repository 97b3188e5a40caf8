//! `wgpu-optim check`: every optimizer on the GPU against the CPU reference, as the README's
//! optimizer table.

use wgpu_optim::GpuContext;
use wgpu_optim_cli::bench;

use crate::{AnyResult, describe, optimizers};

/// Prints the worst GPU-vs-CPU error of every optimizer after `steps` steps on `len` parameters.
pub fn check(len: usize, steps: u32) -> AnyResult<()> {
    let ctx = GpuContext::new()?;
    println!("adapter: {}", describe(&ctx));
    println!("{steps} steps on {len} parameters, torch's defaults; error in ε·(|x| + per-step change)\n");
    println!("| optimizer | follows | state (torch names) | state B/param | GPU vs CPU, worst | max abs Δp |");
    println!("|---|---|---|---:|---:|---:|");
    let (p, g) = bench::inputs(len);
    for o in optimizers(&[], true)? {
        let a = bench::agreement(&ctx, &*o, &p, &g, steps)?;
        let slots = o.kernel().state;
        let names: Vec<String> = slots
            .iter()
            .enumerate()
            .map(|(i, s)| if o.uses_state(i) { s.torch_name.to_string() } else { format!("({})", s.torch_name) })
            .collect();
        let used = (0..slots.len()).filter(|&i| o.uses_state(i)).count();
        let bytes = if used == slots.len() {
            format!("{}", 4 * used)
        } else {
            format!("{} ({} with options)", 4 * used, 4 * slots.len())
        };
        println!(
            "| {} | {} | {} | {bytes} | {:.2} | {:.1e} |",
            o.name(),
            o.reference(),
            names.join(", "),
            a.worst,
            a.max_abs
        );
    }
    let side = (len as f64).sqrt() as usize;
    let a = adafactor_agreement(&ctx, &p[..side * side], &g[..side * side], &[side, side], steps)?;
    println!(
        "| Adafactor | torch.optim.Adafactor | row_var, col_var (matrices); variance (vectors) | 4·(M+N)/(M·N) ({:.3} at {side}×{side}); 4 for vectors | {:.2} | {:.1e} |",
        4.0 * (2 * side) as f64 / (side * side) as f64,
        a.worst,
        a.max_abs
    );
    Ok(())
}

/// Adafactor's GPU-vs-CPU agreement on one matrix after `steps` steps.
fn adafactor_agreement(
    ctx: &GpuContext,
    p: &[f32],
    g: &[f32],
    shape: &[usize],
    steps: u32,
) -> AnyResult<bench::Agreement> {
    let config = wgpu_optim::Adafactor::default();
    let mut gpu = wgpu_optim::GpuOptimizer::with_shape(ctx, config.clone(), p, shape)?;
    let mut cpu = wgpu_optim::CpuOptimizer::with_shape(config, p, shape)?;
    let mut change = 0.0f32;
    let mut g = g.to_vec();
    for k in 0..steps {
        let shift = (k as usize * 7919) % g.len();
        g.rotate_left(shift);
        let before = cpu.params().to_vec();
        gpu.step(&g)?;
        cpu.step(&g)?;
        change = change.max(bench::max_change(&before, cpu.params().as_slice().unwrap_or(&[])));
    }
    let got = gpu.read_params()?;
    let (got, want) = (got.as_slice().unwrap_or(&[]), cpu.params().as_slice().unwrap_or(&[]));
    Ok(bench::Agreement { worst: bench::worst_error(got, want, change).1, max_abs: bench::max_change(got, want) })
}
