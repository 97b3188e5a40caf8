//! `wgpu-optim bench` and `wgpu-optim tune`: GPU and CPU throughput against each side's roof,
//! every GPU result checked before its speed is reported.

use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use wgpu_optim::{GpuContext, Optimizer, SavedTuning, ScalarBinding, Threads, Tuning};
use wgpu_optim_cli::bench::timing::{self, Interleaved};
use wgpu_optim_cli::bench::{self, CpuPass, GpuClock, GpuCopy, Measurement, Mode, Side, Storage, TensorSet, Workload};

use crate::{AnyResult, describe};

/// Runs the benchmark of `opts` over the tensor sets named in `set` and prints (and writes)
/// the table.
pub fn bench(
    opts: &[Box<dyn Optimizer>],
    set: &[String],
    log2_sizes: &[u32],
    threads: Option<usize>,
    plan: &BenchPlan,
    json: Option<PathBuf>,
    markdown: bool,
) -> AnyResult<()> {
    // The output file is opened before any work, so a bad path fails at once, by name.
    let json_file = match &json {
        Some(path) => Some(
            std::fs::File::create(path).map_err(|e| format!("--json {}: cannot write there: {e}", path.display()))?,
        ),
        None => None,
    };
    let mut sets = Vec::new();
    for name in set {
        if name == "one" {
            sets.extend(log2_sizes.iter().map(|&k| TensorSet::one(1usize << k)));
        } else {
            sets.push(
                TensorSet::model(name).ok_or_else(|| {
                    format!("unknown tensor set {name:?}; known: one, {}", bench::MODEL_SETS.join(", "))
                })?,
            );
        }
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads.unwrap_or(0)).build()?;
    let (rows, machine) = pool.install(|| bench_command(opts, &sets, plan))?;
    if markdown {
        print!("{}", bench::markdown(&rows));
        if rows.iter().any(|m| m.roof_fraction() > 1.0) {
            println!("\n{}", bench::ABOVE_ROOF);
        }
    }
    if let (Some(path), Some(mut file)) = (json, json_file) {
        use std::io::Write;
        let report = serde_json::json!({ "machine": machine, "measurements": bench::json(&rows) });
        file.write_all(serde_json::to_string_pretty(&report)?.as_bytes())
            .map_err(|e| format!("--json {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// How the benchmark runs.
pub struct BenchPlan {
    /// GPU steps per submit.
    pub steps_per_submit: u32,
    /// Time the CPU sequential reference too.
    pub sequential: bool,
    /// Skip workloads whose GPU state is larger.
    pub max_bytes: u64,
    /// How the tensors are stored, each in turn.
    pub modes: Vec<&'static Mode>,
}

/// Measures every optimizer on every set; returns the rows and what they were measured on.
fn bench_command(
    opts: &[Box<dyn Optimizer>],
    sets: &[TensorSet],
    plan: &BenchPlan,
) -> AnyResult<(Vec<Measurement>, serde_json::Value)> {
    let ctx = GpuContext::new()?;
    let clock = GpuClock::new(&ctx)?;
    println!("adapter: {}", describe(&ctx));
    println!("CPU: {} threads for the parallel baseline", rayon::current_num_threads());
    println!("GPU time: {}, {} steps per submit", clock.clock().label(), plan.steps_per_submit);
    println!(
        "roof: the step's own memory traffic with no arithmetic, at the same size \
         (GPU: a buffer copy, at most 4 GiB; CPU: p += g and s += g for each state, in place), \
         timed in turn with the step (A B A B ...); medians, with the step's interquartile range \
         and the process's CPU time per step"
    );
    println!("every GPU result is checked against the CPU reference before its speed is reported");
    let units: u64 = sets.iter().map(|s| units_per(s, plan)).sum::<u64>() * (opts.len() * plan.modes.len()) as u64;
    let bar = ProgressBar::new(units).with_style(ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")?);
    let machine = serde_json::json!({
        "adapter": describe(&ctx),
        "gpu_clock": clock.clock().label(),
        "steps_per_submit": plan.steps_per_submit,
        "cpu_threads": rayon::current_num_threads(),
    });
    let mut rows = Vec::new();
    let mut sizes = Vec::new();
    for o in opts {
        for &mode in &plan.modes {
            for set in sets {
                let name = format!("{} {} {}", o.name(), mode.name, set.name);
                // Checked before the workload's host arrays exist.
                let bytes = bench::state_bytes(&**o, set, mode);
                if bytes > plan.max_bytes {
                    let gib = bytes as f64 / 1073741824.0;
                    bar.suspend(|| println!("{name}: skipped, {gib:.1} GiB of state exceeds --max-gib"));
                    bar.inc(units_per(set, plan));
                    continue;
                }
                let measured = Workload::in_mode(&**o, set.clone(), mode).and_then(|w| {
                    let row = (w.optimizer.name(), mode.name, w.bytes_per_step(), w.gpu_bytes(), w.set.total());
                    let rows = measure(&ctx, &clock, &w, plan, &bar)?;
                    let per = |bytes: u64| bytes as f64 / row.4 as f64;
                    sizes.push((row.0, row.1, per(row.2), per(row.3)));
                    Ok(rows)
                });
                match measured {
                    Ok(measured) => rows.extend(measured),
                    // A workload the device cannot hold, or a mode the optimizer does not take, is
                    // skipped; any other error, a wrong result above all, ends the run.
                    Err(
                        e @ (wgpu_optim_cli::Error::Optim(
                            wgpu_optim::Error::OutOfMemory { .. } | wgpu_optim::Error::Unsupported(_),
                        )
                        | wgpu_optim_cli::Error::BenchArgument(_)),
                    ) => {
                        bar.suspend(|| println!("{name}: skipped, {e}"));
                        bar.inc(units_per(set, plan));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    bar.finish_and_clear();
    sizes.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    println!(
        "per parameter on the GPU (moved per step, memory): {}",
        sizes.iter().map(|(o, m, b, mem)| format!("{o} {m} {b:.2} B, {mem:.2} B")).collect::<Vec<_>>().join("; ")
    );
    // Text columns left-aligned, numbers right-aligned.
    let line = |cells: &[String]| {
        let widths = [9, 20, 9, 11, 22, 9, 15, 11, 9, 8, 10, 10];
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (c, w))| if i <= 1 || i == 4 { format!("{c:<w$}") } else { format!("{c:>w$}") })
            .collect();
        println!("{}", padded.join(" "));
    };
    line(&bench::COLUMNS.map(String::from));
    for m in &rows {
        line(&m.cells());
    }
    if rows.iter().any(|m| m.roof_fraction() > 1.0) {
        println!("{}", bench::ABOVE_ROOF);
    }
    if rows.is_empty() {
        return Err("every workload was skipped: raise --max-gib or choose smaller --log2-sizes".into());
    }
    Ok((rows, machine))
}

/// AdamW at every workgroup size and elements per invocation the adapter allows, then with
/// the step's scalars as storage or uniform and with or without runtime checks, then at each
/// physical buffer size: each setting timed in turn with the copy roof (medians, the
/// interquartile range, the fraction of the roof's median), each stage starting from the
/// fastest of the one before (by the step's median: the roof is the same work for every
/// setting, and its own noise would only blur the choice). `save`: where to write the
/// fastest tuning (`WGPU_OPTIM_TUNING` loads it).
pub fn tune(n: usize, steps_per_submit: u32, save: Option<&Path>) -> AnyResult<()> {
    // A path that cannot be written fails at once, by name, not after the measurements.
    if let Some(path) = save {
        std::fs::File::create(path).map_err(|e| format!("--save {}: cannot write there: {e}", path.display()))?;
    }
    let base = GpuContext::new()?;
    println!("adapter: {}", describe(&base));
    let w = Workload::new(wgpu_optim::AdamW::default().into(), TensorSet::one(n));
    let clock = GpuClock::new(&base)?;
    let copy = GpuCopy::new(&base, &clock, w.bytes_per_step())?;
    println!(
        "AdamW, {n} params; each setting timed in turn with a copy of the same traffic (the roof); tuning in force {:?}",
        base.tuning()
    );
    let header = |first: &str| {
        println!("{first:>26} {:>10} {:>17} {:>8} {:>10} {:>10}", "ms/step", "IQR ms", "GB/s", "roof GB/s", "% of roof")
    };
    // Times one tuning (its result checked first); prints its row and returns the step's median.
    let measure = |setting: String, tuning: Tuning| -> AnyResult<f64> {
        let ctx = base.with_tuning(tuning)?;
        let mut gpu = w.gpu(&ctx, Storage::Arena)?;
        w.check(&ctx, &mut gpu, 1)?;
        let steps = gpu.steps(&ctx, &clock, steps_per_submit)?;
        let m = timing::interleaved(5, Duration::from_millis(300), copy.timed(&clock), steps)?;
        let (q1, q3) = m.step.quartiles();
        let gbs = w.bytes_per_step() as f64 / m.step.median();
        let roof = copy.bytes_per_copy() / m.roof.median();
        println!(
            "{setting:>26} {:>10.3} {:>17} {:>8.1} {:>10.1} {:>9.0}%",
            m.step.median() * 1e3,
            format!("{:.3}–{:.3}", q1 * 1e3, q3 * 1e3),
            gbs / 1e9,
            roof / 1e9,
            100.0 * gbs / roof
        );
        Ok(m.step.median())
    };
    let mut best = (f64::INFINITY, base.tuning().clone());
    let consider = |best: &mut (f64, Tuning), seconds: f64, tuning: Tuning| {
        if seconds < best.0 {
            *best = (seconds, tuning);
        }
    };

    header("workgroup size × items");
    let max_wg = base.limits().max_compute_invocations_per_workgroup.min(base.limits().max_compute_workgroup_size_x);
    for wg in [64u32, 128, 256, 512, 1024].into_iter().filter(|&w| w <= max_wg) {
        for items in [1u32, 2, 4, 8] {
            let tuning = Tuning { workgroup_size: wg, items_per_invocation: items, ..base.tuning().clone() };
            consider(&mut best, measure(format!("{wg} × {items}"), tuning.clone())?, tuning);
        }
    }

    // Where the step's scalars are read from, and wgpu's runtime checks (bounds checks, loop
    // bounding) in kernels that check their own range.
    println!();
    header("scalars, runtime checks");
    let chosen = best.1.clone();
    for scalars in ScalarBinding::ALL {
        for runtime_checks in [true, false] {
            let tuning = Tuning { scalars, runtime_checks, ..chosen.clone() };
            if tuning.validate(base.limits()).is_err() {
                continue; // a uniform table larger than this device binds
            }
            let setting = format!("{scalars:?}, {}", if runtime_checks { "checked" } else { "unchecked" });
            consider(&mut best, measure(setting, tuning.clone())?, tuning);
        }
    }

    // Physical buffer size (and the binding sub-range with it): drivers differ in how fast
    // they run large buffers. Only sizes below the tensor's own change its layout.
    println!();
    header("buffer MiB");
    let chosen = best.1.clone();
    let max = base.limits().max_buffer_size.min(base.limits().max_storage_buffer_binding_size);
    for mib in [64u64, 128, 256, 512, 1024, 2048].into_iter().filter(|&m| m << 20 <= max) {
        let bytes = mib << 20;
        let tuning = Tuning { segment_bytes: bytes, buffer_bytes: bytes, ..chosen.clone() };
        consider(&mut best, measure(mib.to_string(), tuning.clone())?, tuning);
        if bytes >= 4 * n as u64 {
            break; // one buffer holds the whole tensor from here on
        }
    }
    let (seconds, tuning) = best;
    println!("\nfastest ({:.3} ms/step): {tuning:?}", seconds * 1e3);
    if let Some(path) = save {
        SavedTuning::new(base.adapter_info(), tuning).save(path)?;
        println!("saved to {}; WGPU_OPTIM_TUNING={} loads it on this adapter", path.display(), path.display());
    }
    Ok(())
}

/// Work units of the progress bar per workload: the roofs, each GPU storage, each CPU side.
fn units_per(set: &TensorSet, plan: &BenchPlan) -> u64 {
    1 + if set.lens.len() > 1 { 2 } else { 1 } + if plan.sequential { 2 } else { 1 }
}

/// Samples of a step and of its roof, taken in turn, per measurement: at least this many…
const MIN_ROUNDS: usize = 7;
/// …and for at least this long.
const MIN_TIME: Duration = Duration::from_millis(600);

/// Measures one workload: the GPU (checked first) in each storage and the CPU sides, each
/// in turn with its own roof.
fn measure(
    ctx: &GpuContext,
    clock: &GpuClock,
    w: &Workload,
    plan: &BenchPlan,
    bar: &ProgressBar,
) -> wgpu_optim_cli::Result<Vec<Measurement>> {
    let mut rows = Vec::new();
    let label = |what: &str| format!("{} {}: {what}", w.optimizer.name(), w.set.name);
    let storages: &[(Storage, Side)] = if w.set.lens.len() > 1 {
        &[(Storage::Arena, Side::Gpu), (Storage::Buffers, Side::GpuBuffers)]
    } else {
        &[(Storage::Arena, Side::Gpu)]
    };
    let measured = |side, m: &Interleaved, roof_bytes: f64| Measurement {
        optimizer: w.optimizer.name().to_string(),
        precision: w.mode.name.to_string(),
        workload: w.set.name.clone(),
        tensors: w.set.lens.len(),
        params: w.set.total(),
        side,
        seconds_per_step: m.step.median(),
        quartiles: m.step.quartiles(),
        cpu_seconds_per_step: m.step_cpu,
        bytes_per_step: if matches!(side, Side::Gpu | Side::GpuBuffers) {
            w.bytes_per_step()
        } else {
            w.cpu_bytes_per_step()
        },
        roof_bytes_per_second: roof_bytes / m.roof.median(),
    };
    bar.set_message(label("roofs"));
    let copy = GpuCopy::new(ctx, clock, w.bytes_per_step())?;
    bar.inc(1);
    for &(storage, side) in storages {
        bar.set_message(label(&format!("{} check", side.label())));
        let mut gpu = w.gpu(ctx, storage)?;
        w.check(ctx, &mut gpu, 2)?;
        bar.set_message(label(side.label()));
        let steps = gpu.steps(ctx, clock, plan.steps_per_submit)?;
        let m = timing::interleaved(MIN_ROUNDS, MIN_TIME, copy.timed(clock), steps)?;
        rows.push(measured(side, &m, copy.bytes_per_copy()));
        bar.inc(1);
    }
    drop(copy);
    let cpu_sides: &[(Threads, Side)] = if plan.sequential {
        &[(Threads::Sequential, Side::CpuSequential), (Threads::Parallel, Side::CpuParallel)]
    } else {
        &[(Threads::Parallel, Side::CpuParallel)]
    };
    let mut pass = CpuPass::new(&*w.optimizer, w.mode, w.set.total())?;
    for &(threads, side) in cpu_sides {
        bar.set_message(label(side.label()));
        let mut cpu = w.cpu(threads)?;
        let steps = w.cpu_steps(&mut cpu, threads)?;
        let bytes = pass.bytes_per_pass();
        let m = timing::interleaved(MIN_ROUNDS, MIN_TIME, pass.timed(), steps)?;
        rows.push(measured(side, &m, bytes));
        bar.inc(1);
    }
    Ok(rows)
}
