//! The `wgpu-optim` command: benchmark GPU against CPU, check GPU against CPU, show the adapter.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use wgpu_optim::bench::{self, Measurement, Side};
use wgpu_optim::{GpuContext, Optimizer, Threads, optim};

#[derive(Parser)]
#[command(
    version,
    about = "Fused optimizer steps on any GPU through wgpu, checked against and benchmarked with the CPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Time one optimizer step on the GPU, the CPU reference and the CPU parallel baseline,
    /// as GB/s and as a fraction of each side's measured copy bandwidth.
    Bench {
        /// Optimizers to run (sgd, adam, adamw), with torch's defaults.
        #[arg(long, value_delimiter = ',', default_value = "adamw")]
        optimizer: Vec<String>,
        /// Every optimizer.
        #[arg(long)]
        all: bool,
        /// Sizes as powers of two (parameters per step).
        #[arg(long, value_delimiter = ',', default_values_t = [16u32, 18, 20, 22, 24])]
        log2_sizes: Vec<u32>,
        /// GPU steps per submit (all in one compute pass).
        #[arg(long, default_value_t = 20)]
        steps_per_submit: u32,
        /// Threads for the CPU parallel baseline (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Skip the CPU sequential reference (slow at large sizes; the check still uses the CPU).
        #[arg(long)]
        no_sequential: bool,
        /// Write the measurements as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Print the table as markdown (for README.md).
        #[arg(long)]
        markdown: bool,
    },
    /// Check every optimizer on the GPU against the CPU reference and print the worst error.
    Check {
        /// Parameters per tensor.
        #[arg(long, default_value_t = 100_003)]
        len: usize,
        /// Steps per optimizer.
        #[arg(long, default_value_t = 10)]
        steps: u32,
    },
    /// Show the adapter and the tuning in force.
    Info,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn optimizers(
    names: &[String],
    all: bool,
) -> Result<Vec<Box<dyn Optimizer>>, Box<dyn std::error::Error + Send + Sync>> {
    if all {
        return Ok(optim::ALL.iter().map(|(_, make)| make()).collect());
    }
    names
        .iter()
        .map(|n| {
            optim::by_name(n).ok_or_else(|| {
                let known: Vec<_> = optim::ALL.iter().map(|(n, _)| *n).collect();
                format!("unknown optimizer {n:?}; known: {}", known.join(", ")).into()
            })
        })
        .collect()
}

fn describe(ctx: &GpuContext) -> String {
    let i = ctx.adapter_info();
    format!("{} ({:?}, {:?}, driver {} {})", i.name, i.backend, i.device_type, i.driver, i.driver_info)
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    match cli.command {
        Command::Info => {
            let ctx = GpuContext::new()?;
            println!("adapter: {}", describe(&ctx));
            let l = ctx.limits();
            println!(
                "limits: max_buffer_size {}, max_storage_buffer_binding_size {}, max workgroups/dim {}",
                l.max_buffer_size, l.max_storage_buffer_binding_size, l.max_compute_workgroups_per_dimension
            );
            println!("tuning: {:?}", ctx.tuning());
            Ok(())
        }
        Command::Check { len, steps } => {
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
                    .map(
                        |(i, s)| if o.uses_state(i) { s.torch_name.to_string() } else { format!("({})", s.torch_name) },
                    )
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
        Command::Bench { optimizer, all, log2_sizes, steps_per_submit, threads, no_sequential, json, markdown } => {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads.unwrap_or(0)).build()?;
            pool.install(|| {
                bench_command(
                    &optimizers(&optimizer, all)?,
                    &log2_sizes,
                    steps_per_submit,
                    !no_sequential,
                    json,
                    markdown,
                )
            })
        }
    }
}

fn bench_command(
    opts: &[Box<dyn Optimizer>],
    log2_sizes: &[u32],
    steps_per_submit: u32,
    sequential: bool,
    json: Option<PathBuf>,
    markdown: bool,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let ctx = GpuContext::new()?;
    println!("adapter: {}", describe(&ctx));
    println!("CPU: {} threads for the parallel baseline", rayon::current_num_threads());
    println!(
        "roof: the step's own memory traffic with no arithmetic, at the same size \
         (GPU: a buffer copy; CPU: p += g and s += g for each state, in place)"
    );
    let sides = if sequential { 3 } else { 2 };
    let bar = ProgressBar::new((opts.len() * log2_sizes.len() * sides) as u64)
        .with_style(ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")?);
    let mut rows = Vec::new();
    for o in opts {
        let bytes = bench::bytes_per_param(&**o);
        for &log2 in log2_sizes {
            let n = 1usize << log2;
            let (p, g) = bench::inputs(n);
            bar.set_message(format!("{} 2^{log2}: checking", o.name()));
            bench::check_gpu(&ctx, &**o, &p, &g)?;
            bar.set_message(format!("{} 2^{log2}: roofs", o.name()));
            let gpu_roof = bench::gpu_copy_roof(&ctx, bytes * n as u64)?;
            let cpu_roof = bench::cpu_roof(&**o, n)?;
            let mut push = |side, secs, roof| {
                rows.push(Measurement {
                    optimizer: o.name().to_string(),
                    params: n,
                    side,
                    seconds_per_step: secs,
                    bytes_per_step: bytes * n as u64,
                    roof_bytes_per_second: roof,
                });
                bar.inc(1);
            };
            bar.set_message(format!("{} 2^{log2}: GPU", o.name()));
            push(Side::Gpu, bench::time_gpu(&ctx, &**o, &p, &g, steps_per_submit)?, gpu_roof);
            if sequential {
                bar.set_message(format!("{} 2^{log2}: CPU sequential", o.name()));
                push(Side::CpuSequential, bench::time_cpu(&**o, &p, &g, Threads::Sequential)?, cpu_roof);
            }
            bar.set_message(format!("{} 2^{log2}: CPU parallel", o.name()));
            push(Side::CpuParallel, bench::time_cpu(&**o, &p, &g, Threads::Parallel)?, cpu_roof);
        }
    }
    bar.finish_and_clear();
    println!(
        "bytes moved per parameter: {}",
        opts.iter().map(|o| format!("{} {} B", o.name(), bench::bytes_per_param(&**o))).collect::<Vec<_>>().join(", ")
    );
    if markdown {
        print!("{}", bench::markdown(&rows));
    } else {
        println!(
            "{:<8} {:>6} {:<15} {:>10} {:>9} {:>8} {:>10} {:>10}",
            "opt", "params", "side", "ms/step", "Gparam/s", "GB/s", "roof GB/s", "% of roof"
        );
        for m in &rows {
            println!(
                "{:<8} {:>6} {:<15} {:>10.3} {:>9.3} {:>8.1} {:>10.1} {:>9.0}%",
                m.optimizer,
                format!("2^{}", m.params.ilog2()),
                m.side.label(),
                m.seconds_per_step * 1e3,
                m.params_per_second() / 1e9,
                m.gb_per_second(),
                m.roof_bytes_per_second / 1e9,
                100.0 * m.roof_fraction()
            );
        }
    }
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&bench::json(&rows))?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Adafactor's GPU-vs-CPU agreement on one matrix after `steps` steps.
fn adafactor_agreement(
    ctx: &GpuContext,
    p: &[f32],
    g: &[f32],
    shape: &[usize],
    steps: u32,
) -> Result<bench::Agreement, Box<dyn std::error::Error + Send + Sync>> {
    let config = wgpu_optim::Adafactor::default();
    let mut gpu = wgpu_optim::GpuAdafactor::new(ctx, config.clone(), p, shape)?;
    let mut cpu = wgpu_optim::CpuAdafactor::new(config, p, shape)?;
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
