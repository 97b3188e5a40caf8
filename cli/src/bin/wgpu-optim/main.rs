//! The `wgpu-optim` command: benchmark GPU against CPU, check GPU against CPU, show the adapter.

mod bench;
mod check;
mod demo;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wgpu_optim::{GpuContext, Optimizer, optim};

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
        /// How the tensors are stored: f32, bf16 (parameters and gradients), bf16-master (with
        /// f32 master weights), bf16-sr (stochastic rounding), bf16-moments (f32 parameters,
        /// bf16 state), bf16-sr-bf16-moments, f16, f16-master.
        #[arg(long, value_delimiter = ',', default_value = "f32")]
        precision: Vec<String>,
        /// Sizes of `one`, as powers of two (parameters per step).
        #[arg(long, value_delimiter = ',', default_values_t = [16u32, 18, 20, 22, 24, 26],
              value_parser = clap::value_parser!(u32).range(0..=40))]
        log2_sizes: Vec<u32>,
        /// Skip workloads whose GPU state (parameters, gradients, optimizer state) — or the host
        /// arrays of the CPU side, which are as large — exceeds this.
        #[arg(long, default_value_t = 16.0, value_parser = positive_gib)]
        max_gib: f64,
        /// GPU steps per submit, 1 to 128.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=128))]
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
    /// Measure AdamW on the GPU at each workgroup size, elements per invocation, scalar binding,
    /// runtime checks and physical buffer size, to choose the `Tuning` for an adapter.
    Tune {
        /// Write the best tuning to this file (JSON); `WGPU_OPTIM_TUNING=FILE` loads it.
        #[arg(long)]
        save: Option<PathBuf>,
        /// Parameters, as a power of two (0 to 40).
        #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(0..=40))]
        log2_size: u32,
        /// GPU steps per submit, 1 to 128.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=128))]
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
        /// Folder for the pictures and tables (`--out docs/demo` regenerates README's copies).
        #[arg(long, default_value = "demo-output")]
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

/// `--max-gib`: a positive, finite number of GiB.
fn positive_gib(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!("{s:?} is not a positive number of GiB (for example 16 or 0.5)")),
    }
}

pub(crate) fn optimizers(names: &[String], all: bool) -> AnyResult<Vec<Box<dyn Optimizer>>> {
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

pub(crate) fn describe(ctx: &GpuContext) -> String {
    let i = ctx.adapter_info();
    format!("{} ({:?}, {:?}, driver {} {})", i.name, i.backend, i.device_type, i.driver, i.driver_info)
}

fn run(cli: Cli) -> AnyResult<()> {
    match cli.command {
        Command::Info => {
            let ctx = GpuContext::new()?;
            println!("adapter: {}", describe(&ctx));
            let l = ctx.limits();
            println!(
                "limits: max_buffer_size {}, max_storage_buffer_binding_size {}, max workgroups/dim {}",
                l.max_buffer_size, l.max_storage_buffer_binding_size, l.max_compute_workgroups_per_dimension
            );
            let source = match std::env::var_os("WGPU_OPTIM_TUNING").filter(|v| !v.is_empty()) {
                Some(path) => format!("loaded from {} (WGPU_OPTIM_TUNING)", std::path::Path::new(&path).display()),
                None => match wgpu_optim::tuning::adapter_family(ctx.adapter_info()) {
                    Some(family) => format!("measured on {family}"),
                    None => "the defaults for its limits (no measured family: `wgpu-optim tune --save`)".into(),
                },
            };
            println!("tuning, {source}: {:?}", ctx.tuning());
            Ok(())
        }
        Command::Check { len, steps } => check::check(len, steps),
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
            precision,
        } => {
            // The bench's tensor sets are flat; a shaped step (Adafactor) follows each tensor's
            // shape, so its traffic is not theirs: `check` measures it on a matrix.
            let opts = optimizers(&optimizer, all)?;
            if let Some(o) = opts.iter().find(|o| o.kernel().is_shaped() && !all) {
                return Err(format!(
                    "{}: its step follows each tensor's shape, which the bench's flat tensor sets do not have \
                     (`wgpu-optim check` measures it on a matrix)",
                    o.name()
                )
                .into());
            }
            let opts: Vec<_> = opts.into_iter().filter(|o| !o.kernel().is_shaped()).collect();
            let modes = precision.iter().map(|m| wgpu_optim_cli::bench::Mode::by_name(m));
            let plan = bench::BenchPlan {
                steps_per_submit,
                sequential: !no_sequential,
                max_bytes: (max_gib * 1073741824.0) as u64,
                modes: modes.collect::<Result<Vec<_>, _>>()?,
            };
            bench::bench(&opts, &set, &log2_sizes, threads, &plan, json, markdown)
        }
        Command::Tune { save, log2_size, steps_per_submit } => {
            bench::tune(1usize << log2_size, steps_per_submit, save.as_deref())
        }
        Command::Demo { out, starts, steps, model_steps, seed, warmup_cosine, clip } => {
            let config = wgpu_optim_cli::demo::DemoConfig {
                starts,
                steps,
                model_steps,
                seed,
                warmup_cosine,
                clip,
                ..Default::default()
            };
            demo::demo(&config, &out)
        }
    }
}

/// Any error the command reports.
pub(crate) type AnyResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;
