//! The `wgpu-optim` command: benchmark GPU against CPU, check GPU against CPU, show the adapter.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use wgpu_optim::bench::{self, GpuClock, Measurement, Side, Storage, TensorSet, Workload};
use wgpu_optim::{GpuContext, Optimizer, Threads, demo, optim};

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
        /// Optimizers to run (sgd, adam, adamw, …), with torch's defaults.
        #[arg(long, value_delimiter = ',', default_value = "adamw")]
        optimizer: Vec<String>,
        /// Every element-wise optimizer.
        #[arg(long)]
        all: bool,
        /// Tensor sets: `one` (a tensor of each size of the sweep), `gpt2` (GPT-2 124M's 148
        /// tensors), `gpt2-xl` (1.56B, 580 tensors), `gpt2-mini` (148 small tensors).
        #[arg(long, value_delimiter = ',', default_value = "one")]
        set: Vec<String>,
        /// Sizes of `one`, as powers of two (parameters per step).
        #[arg(long, value_delimiter = ',', default_values_t = [16u32, 18, 20, 22, 24, 26])]
        log2_sizes: Vec<u32>,
        /// Skip workloads whose GPU state (parameters, gradients, optimizer state) exceeds this.
        #[arg(long, default_value_t = 16.0)]
        max_gib: f64,
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
    /// Measure AdamW on the GPU at each workgroup size, elements per invocation and physical
    /// buffer size, to choose the `Tuning` for an adapter.
    Tune {
        /// Parameters, as a power of two.
        #[arg(long, default_value_t = 24)]
        log2_size: u32,
        /// GPU steps per submit.
        #[arg(long, default_value_t = 20)]
        steps_per_submit: u32,
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
    /// Every optimizer on the classic test functions (many starts as one GPU batch) and on
    /// small models trained on the GPU: pictures (PNG) and a convergence table (markdown, JSON).
    Demo {
        /// Folder for the pictures and tables.
        #[arg(long, default_value = "docs/demo")]
        out: PathBuf,
        /// Random starts per learning rate on each test function (a multiple of 32).
        #[arg(long, default_value_t = 1024)]
        starts: usize,
        /// Steps on the test functions.
        #[arg(long, default_value_t = 2000)]
        steps: u32,
        /// Steps of model training.
        #[arg(long, default_value_t = 500)]
        model_steps: u32,
        /// Seed of the starts, the data and the initial weights.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Train the models with a linear warmup (10 % of the steps) then cosine decay.
        #[arg(long)]
        warmup_cosine: bool,
        /// Clip the models' global gradient norm to this.
        #[arg(long)]
        clip: Option<f32>,
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
        Command::Bench {
            optimizer,
            all,
            set,
            log2_sizes,
            max_gib,
            steps_per_submit,
            threads,
            no_sequential,
            json,
            markdown,
        } => {
            let mut sets = Vec::new();
            for name in &set {
                if name == "one" {
                    sets.extend(log2_sizes.iter().map(|&k| TensorSet::one(1usize << k)));
                } else {
                    sets.push(TensorSet::model(name).ok_or_else(|| {
                        format!("unknown tensor set {name:?}; known: one, {}", bench::MODEL_SETS.join(", "))
                    })?);
                }
            }
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads.unwrap_or(0)).build()?;
            let plan =
                BenchPlan { steps_per_submit, sequential: !no_sequential, max_bytes: (max_gib * 1073741824.0) as u64 };
            let rows = pool.install(|| bench_command(&optimizers(&optimizer, all)?, &sets, &plan))?;
            if markdown {
                print!("{}", bench::markdown(&rows));
            }
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&bench::json(&rows))?)?;
                println!("wrote {}", path.display());
            }
            Ok(())
        }
        Command::Tune { log2_size, steps_per_submit } => tune(1usize << log2_size, steps_per_submit),
        Command::Demo { out, starts, steps, model_steps, seed, warmup_cosine, clip } => {
            let config =
                demo::DemoConfig { starts, steps, model_steps, seed, warmup_cosine, clip, ..Default::default() };
            let ctx = GpuContext::new()?;
            println!("adapter: {}", describe(&ctx));
            println!(
                "{} optimizers (torch's defaults, SGD also with momentum 0.9); learning rates swept over {:?}, \
                 each problem keeping the best",
                demo::optimizers().len(),
                config.learning_rates
            );
            println!(
                "test functions: {starts} starts per learning rate (the classic one first) × {steps} steps; \
                 models: {model_steps} full-batch steps{}{}",
                if warmup_cosine { ", warmup + cosine" } else { "" },
                clip.map_or(String::new(), |c| format!(", gradient norm clipped to {c}"))
            );
            println!(
                "Adafactor runs on the models only: its relative step and update clipping are RMS statistics of the whole tensor, which would couple a batch of independent 2-D problems"
            );
            let bar = ProgressBar::new_spinner();
            let report = demo::run_all(&ctx, &config, &|what| bar.set_message(format!("running {what}")))?;
            bar.finish_and_clear();
            let files = report.write(&out, &config)?;
            print!("{}", std::fs::read_to_string(out.join("convergence.md"))?);
            for f in files {
                println!("wrote {}", f.display());
            }
            Ok(())
        }
    }
}

struct BenchPlan {
    steps_per_submit: u32,
    sequential: bool,
    max_bytes: u64,
}

type AnyResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn bench_command(opts: &[Box<dyn Optimizer>], sets: &[TensorSet], plan: &BenchPlan) -> AnyResult<Vec<Measurement>> {
    let ctx = GpuContext::new()?;
    let clock = GpuClock::new(&ctx)?;
    println!("adapter: {}", describe(&ctx));
    println!("CPU: {} threads for the parallel baseline", rayon::current_num_threads());
    println!("GPU time: {}, {} steps per submit", clock.clock().label(), plan.steps_per_submit);
    println!(
        "roof: the step's own memory traffic with no arithmetic, at the same size \
         (GPU: a buffer copy, at most 4 GiB; CPU: p += g and s += g for each state, in place)"
    );
    println!("every GPU result is checked against the CPU reference before its speed is reported");
    // Per workload: the roofs, each GPU storage, each CPU side.
    let cpu_sides = if plan.sequential { 2 } else { 1 };
    let units: usize =
        sets.iter().map(|s| 1 + if s.lens.len() > 1 { 2 } else { 1 } + cpu_sides).sum::<usize>() * opts.len();
    let bar = ProgressBar::new(units as u64).with_style(ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")?);
    let mut rows = Vec::new();
    for o in opts {
        for set in sets {
            let w = Workload::new(o.clone_box(), set.clone());
            if w.gpu_bytes() > plan.max_bytes {
                bar.println(format!(
                    "{} {}: skipped, {:.1} GiB of GPU state exceeds --max-gib",
                    o.name(),
                    set.name,
                    w.gpu_bytes() as f64 / 1073741824.0
                ));
                continue;
            }
            let label = |what: &str| format!("{} {}: {what}", o.name(), set.name);
            let storages: &[(Storage, Side)] = if set.lens.len() > 1 {
                &[(Storage::Arena, Side::Gpu), (Storage::Buffers, Side::GpuBuffers)]
            } else {
                &[(Storage::Arena, Side::Gpu)]
            };
            let measured = |side, seconds, roof| Measurement {
                optimizer: o.name().to_string(),
                workload: set.name.clone(),
                tensors: set.lens.len(),
                params: set.total(),
                side,
                seconds_per_step: seconds,
                bytes_per_step: w.bytes_per_step(),
                roof_bytes_per_second: roof,
            };
            bar.set_message(label("roofs"));
            let gpu_roof = bench::gpu_copy_roof(&ctx, w.bytes_per_step())?;
            let cpu_roof = bench::cpu_roof(&**o, set.total())?;
            bar.inc(1);
            for &(storage, side) in storages {
                bar.set_message(label(&format!("{} check", side.label())));
                let mut gpu = w.gpu(&ctx, storage)?;
                w.check(&ctx, &mut gpu, 2)?;
                bar.set_message(label(side.label()));
                let seconds = gpu.time(&ctx, &clock, plan.steps_per_submit)?;
                rows.push(measured(side, seconds, gpu_roof));
                bar.inc(1);
            }
            let cpu_sides: &[(Threads, Side)] = if plan.sequential {
                &[(Threads::Sequential, Side::CpuSequential), (Threads::Parallel, Side::CpuParallel)]
            } else {
                &[(Threads::Parallel, Side::CpuParallel)]
            };
            for &(threads, side) in cpu_sides {
                bar.set_message(label(side.label()));
                let seconds = w.time_cpu(threads)?;
                rows.push(measured(side, seconds, cpu_roof));
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    println!(
        "bytes moved per parameter: {}",
        opts.iter().map(|o| format!("{} {} B", o.name(), bench::bytes_per_param(&**o))).collect::<Vec<_>>().join(", ")
    );
    println!(
        "{:<8} {:>9} {:>11} {:<22} {:>10} {:>9} {:>8} {:>10} {:>10}",
        "opt", "tensors", "params", "side", "ms/step", "Gparam/s", "GB/s", "roof GB/s", "% of roof"
    );
    for m in &rows {
        println!(
            "{:<8} {:>9} {:>11} {:<22} {:>10.3} {:>9.3} {:>8.1} {:>10.1} {:>9.0}%",
            m.optimizer,
            m.workload,
            m.params,
            m.side.label(),
            m.seconds_per_step * 1e3,
            m.params_per_second() / 1e9,
            m.gb_per_second(),
            m.roof_bytes_per_second / 1e9,
            100.0 * m.roof_fraction()
        );
    }
    Ok(rows)
}

/// AdamW at every workgroup size and elements per invocation the adapter allows.
fn tune(n: usize, steps_per_submit: u32) -> AnyResult<()> {
    let base = GpuContext::new()?;
    println!("adapter: {}", describe(&base));
    let w = Workload::new(wgpu_optim::AdamW::default().into(), TensorSet::one(n));
    let roof = bench::gpu_copy_roof(&base, w.bytes_per_step())?;
    println!("AdamW, {} params, roof {:.1} GB/s; default tuning {:?}", n, roof / 1e9, base.tuning());
    println!("{:>14} {:>12} {:>10} {:>8} {:>10}", "workgroup size", "items/invoc.", "ms/step", "GB/s", "% of roof");
    let max_wg = base.limits().max_compute_invocations_per_workgroup.min(base.limits().max_compute_workgroup_size_x);
    let mut best = (0.0, 0, 0);
    for wg in [64u32, 128, 256, 512, 1024].into_iter().filter(|&w| w <= max_wg) {
        for items in [1u32, 2, 4, 8] {
            let ctx = base.with_tuning(wgpu_optim::Tuning {
                workgroup_size: wg,
                items_per_invocation: items,
                ..*base.tuning()
            })?;
            let clock = GpuClock::new(&ctx)?;
            let mut gpu = w.gpu(&ctx, Storage::Arena)?;
            w.check(&ctx, &mut gpu, 1)?;
            let seconds = gpu.time(&ctx, &clock, steps_per_submit)?;
            let gbs = w.bytes_per_step() as f64 / seconds;
            println!("{wg:>14} {items:>12} {:>10.3} {:>8.1} {:>9.0}%", seconds * 1e3, gbs / 1e9, 100.0 * gbs / roof);
            if gbs > best.0 {
                best = (gbs, wg, items);
            }
        }
    }
    println!("best: workgroup size {}, {} items per invocation ({:.1} GB/s)", best.1, best.2, best.0 / 1e9);

    // Physical buffer size (and the binding sub-range with it): drivers differ in how fast
    // they run large buffers. Only sizes below the tensor's own change its layout.
    println!("\n{:>12} {:>10} {:>8} {:>10}", "buffer MiB", "ms/step", "GB/s", "% of roof");
    let max = base.limits().max_buffer_size.min(base.limits().max_storage_buffer_binding_size);
    for mib in [64u64, 128, 256, 512, 1024, 2048].into_iter().filter(|&m| m << 20 <= max) {
        let bytes = mib << 20;
        let tuning = wgpu_optim::Tuning { segment_bytes: bytes, buffer_bytes: bytes, ..*base.tuning() };
        let ctx = base.with_tuning(tuning)?;
        let mut gpu = w.gpu(&ctx, Storage::Arena)?;
        w.check(&ctx, &mut gpu, 1)?;
        let seconds = gpu.time(&ctx, &GpuClock::new(&ctx)?, steps_per_submit)?;
        let gbs = w.bytes_per_step() as f64 / seconds;
        println!("{mib:>12} {:>10.3} {:>8.1} {:>9.0}%", seconds * 1e3, gbs / 1e9, 100.0 * gbs / roof);
        if bytes >= 4 * n as u64 {
            break; // one buffer holds the whole tensor from here on
        }
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
