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
    let side = (len as f64).sqrt() as usize;
    for o in optimizers(&[], true)? {
        if o.kernel().is_shaped() {
            // Its step and state follow the shape: measured on a side × side matrix.
            let a = shaped_agreement(&ctx, &*o, &p[..side * side], &g[..side * side], &[side, side], steps)?;
            let names: Vec<&str> = (0..o.kernel().state.len())
                .filter(|&i| o.state_len(i, &[side, side]) > 0)
                .map(|i| o.kernel().state[i].torch_name)
                .collect();
            let vector: Vec<&str> = (0..o.kernel().state.len())
                .filter(|&i| o.state_len(i, &[side]) > 0)
                .map(|i| o.kernel().state[i].torch_name)
                .collect();
            let bytes: usize = (0..o.kernel().state.len()).map(|i| o.state_len(i, &[side, side])).sum::<usize>() * 4;
            println!(
                "| {} | {} | {} (matrices); {} (vectors) | {:.3} at {side}×{side}; {} for vectors | {:.2} | {:.1e} |",
                o.name(),
                o.reference(),
                names.join(", "),
                vector.join(", "),
                bytes as f64 / (side * side) as f64,
                4 * vector.len(),
                a.worst,
                a.max_abs
            );
            continue;
        }
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
    Ok(())
}

/// A shaped step's GPU-vs-CPU agreement on one tensor of `shape` after `steps` steps.
fn shaped_agreement(
    ctx: &GpuContext,
    o: &dyn wgpu_optim::Optimizer,
    p: &[f32],
    g: &[f32],
    shape: &[usize],
    steps: u32,
) -> AnyResult<bench::Agreement> {
    let mut gpu = wgpu_optim::GpuOptimizer::with_shape(ctx, o.clone_box(), p, shape)?;
    let mut cpu = wgpu_optim::CpuOptimizer::with_shape(o.clone_box(), p, shape)?;
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
