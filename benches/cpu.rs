//! criterion benches of the CPU paths (reference and parallel baseline) and of the GPU
//! engine's host-side cost of recording steps.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wgpu_optim::bench::{bytes_per_param, inputs};
use wgpu_optim::{AdamW, CpuOptimizer, GpuContext, GpuOptimizer, Optimizer, Sgd, Threads};

fn cpu_steps(c: &mut Criterion) {
    let mut group = c.benchmark_group("cpu step");
    let opts: [Box<dyn Optimizer>; 2] = [AdamW::default().into(), Sgd::new(0.1).with_momentum(0.9).into()];
    for o in opts {
        for log2 in [16u32, 20, 22] {
            let n = 1usize << log2;
            let (p, g) = inputs(n);
            group.throughput(Throughput::Bytes(bytes_per_param(&*o) * n as u64));
            for threads in [Threads::Sequential, Threads::Parallel] {
                let mut cpu = CpuOptimizer::new(o.clone(), &p).unwrap().with_threads(threads);
                let id = BenchmarkId::new(format!("{} {threads:?}", o.name()), format!("2^{log2}"));
                group.bench_function(id, |b| b.iter(|| cpu.step(&g).unwrap()));
            }
        }
    }
    group.finish();
}

/// Host time to record and submit steps, without waiting for the GPU: the per-step
/// overhead a training loop pays on the CPU.
fn host_overhead(c: &mut Criterion) {
    let Ok(ctx) = GpuContext::new() else {
        eprintln!("no GPU adapter: skipping the host-overhead bench (install mesa-vulkan-drivers for lavapipe)");
        return;
    };
    let mut group = c.benchmark_group("host overhead");
    let (p, g) = inputs(1024);
    for k in [1u32, 100] {
        let mut gpu = GpuOptimizer::new(&ctx, AdamW::default(), &p).unwrap();
        gpu.grads().write(&ctx, &g).unwrap();
        group.throughput(Throughput::Elements(u64::from(k)));
        // Only the host's record + submit is timed; the wait for the GPU is outside the clock.
        group.bench_function(BenchmarkId::new("record+submit AdamW, steps per submit", k), |b| {
            b.iter_custom(|iters| {
                let mut host = std::time::Duration::ZERO;
                for _ in 0..iters {
                    let t = std::time::Instant::now();
                    gpu.run(k).unwrap();
                    host += t.elapsed();
                    ctx.wait().unwrap();
                }
                host
            })
        });
    }
    group.finish();
}

criterion_group!(benches, cpu_steps, host_overhead);
criterion_main!(benches);
