//! criterion benches of the CPU paths (reference and parallel baseline) and of the GPU
//! engine's host-side cost of recording steps: one tensor, GPT-2's 148 tensors as separate
//! buffers (one dispatch per tensor) or as one arena (one dispatch per group), and 10 000
//! tensors as separate buffers — beside wgpu's own floor, measured the same way: an empty
//! submit, a submit of one trivial dispatch, and dispatches binding 1, 4 or 16 buffers each.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wgpu_optim::{
    AdamW, CpuOptimizer, GpuContext, GpuOptimizer, GpuTensor, Optimizer, ParamGroup, ParamGroups, Sgd, Threads,
};
use wgpu_optim_cli::bench::{bytes_per_param, gpt2_shapes, inputs};

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
    let ctx = context();
    let mut group = c.benchmark_group("host overhead");
    let (p, g) = inputs(1024);
    for k in [1u32, 100] {
        let mut gpu = GpuOptimizer::new(&ctx, AdamW::default(), &p).unwrap();
        gpu.grads().write(&ctx, &g).unwrap();
        group.throughput(Throughput::Elements(u64::from(k)));
        // Only the host's record + submit is timed; the wait for the GPU is outside the clock.
        group.bench_function(BenchmarkId::new("record+submit AdamW, steps per submit", k), |b| {
            b.iter_custom(|iters| host_time(&ctx, iters, || gpu.run(k).unwrap()))
        });
    }
    group.finish();
}

/// wgpu's own host cost, the floor under the engine's: an empty submit, a submit of one
/// dispatch of a one-line kernel, and 840 buffers bound `per` to a bind group, a dispatch per
/// group in one pass (the cost of a dispatch, and of each buffer it binds: wgpu tracks every
/// bound buffer at every dispatch).
fn host_floor(c: &mut Criterion) {
    let ctx = context();
    let d = ctx.device();
    let mut group = c.benchmark_group("host floor (wgpu)");
    let kernel = |per: usize| {
        let decl: String =
            (0..per).map(|b| format!("@group(0) @binding({b}) var<storage, read_write> b{b}: array<f32>;\n")).collect();
        let body: String = (0..per).map(|b| format!("b{b}[0] = b{b}[0] + 1.0;\n")).collect();
        let source = format!("{decl}@compute @workgroup_size(1) fn main() {{ {body} }}");
        ctx.compile_kernel("floor", &source, "main").unwrap()
    };
    let buffers: Vec<wgpu::Buffer> = (0..840)
        .map(|_| {
            d.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: 256,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        })
        .collect();
    let submit = |groups: &[wgpu::BindGroup], pipeline: Option<&wgpu::ComputePipeline>| {
        let mut encoder = d.create_command_encoder(&Default::default());
        if let Some(pipeline) = pipeline {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(pipeline);
            for g in groups {
                pass.set_bind_group(0, g, &[]);
                pass.dispatch_workgroups(1, 1, 1);
            }
        }
        ctx.queue().submit([encoder.finish()]);
    };
    group.bench_function("empty submit", |b| b.iter_custom(|iters| host_time(&ctx, iters, || submit(&[], None))));
    for per in [1usize, 4, 16] {
        let pipeline = kernel(per);
        let layout = pipeline.get_bind_group_layout(0);
        let groups: Vec<wgpu::BindGroup> = buffers
            .chunks_exact(per)
            .map(|c| {
                let entries: Vec<_> = c
                    .iter()
                    .enumerate()
                    .map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() })
                    .collect();
                d.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &layout, entries: &entries })
            })
            .collect();
        if per == 1 {
            group.bench_function("submit of one dispatch", |b| {
                b.iter_custom(|iters| host_time(&ctx, iters, || submit(&groups[..1], Some(&pipeline))))
            });
        }
        group.throughput(Throughput::Elements(groups.len() as u64));
        group.bench_function(BenchmarkId::new("dispatches binding buffers each", per), |b| {
            b.iter_custom(|iters| host_time(&ctx, iters, || submit(&groups, Some(&pipeline))))
        });
    }
    group.finish();
}

/// GPT-2's 148 parameter tensors at width `d` (vocabulary 1024, context 128): their lengths,
/// and whether each is a matrix (weight decay applies).
fn gpt2_lens(d: usize) -> Vec<(usize, bool)> {
    gpt2_shapes(12, d, 1024, 128).iter().map(|s| (s.iter().product(), s.len() == 2)).collect()
}

/// Host time per step of 148 tensors in two groups (weight decay on matrices only).
fn host_overhead_148_tensors(c: &mut Criterion) {
    let ctx = context();
    let shapes = gpt2_lens(64);
    let configs = || [AdamW::new(1e-3).with_weight_decay(0.1), AdamW::new(1e-3).with_weight_decay(0.0)];
    // Separate buffers.
    let sep: Vec<(GpuTensor, GpuTensor, bool)> = shapes
        .iter()
        .map(|&(len, m)| (GpuTensor::zeros(&ctx, len).unwrap(), GpuTensor::zeros(&ctx, len).unwrap(), m))
        .collect();
    let group = |decay: bool| ParamGroup {
        optimizer: configs()[usize::from(!decay)].clone().into(),
        params: sep.iter().filter(|t| t.2 == decay).map(|t| &t.0).collect(),
        grads: sep.iter().filter(|t| t.2 == decay).map(|t| &t.1).collect(),
        shapes: Vec::new(),
        precision: Default::default(),
    };
    let mut separate = ParamGroups::new(&ctx, vec![group(true), group(false)]).unwrap();
    // One arena: each group one contiguous, aligned slice.
    let total = |decay: bool| shapes.iter().filter(|s| s.1 == decay).map(|s| s.0.next_multiple_of(64)).sum::<usize>();
    let (a, b) = (total(true), total(false));
    let arena_p = GpuTensor::zeros(&ctx, a + b).unwrap();
    let arena_g = GpuTensor::zeros(&ctx, a + b).unwrap();
    let slices =
        [(0, a), (a, b)].map(|(o, l)| (arena_p.slice(&ctx, o, l).unwrap(), arena_g.slice(&ctx, o, l).unwrap()));
    let mut arena = ParamGroups::new(
        &ctx,
        (0..2)
            .map(|g| ParamGroup {
                optimizer: configs()[g].clone().into(),
                params: vec![&slices[g].0],
                grads: vec![&slices[g].1],
                shapes: Vec::new(),
                precision: Default::default(),
            })
            .collect(),
    )
    .unwrap();
    let mut group = c.benchmark_group("host overhead, GPT-2 148 tensors");
    for (label, groups) in [("separate buffers", &mut separate), ("arena", &mut arena)] {
        for k in [1u32, 100] {
            group.throughput(Throughput::Elements(u64::from(k)));
            group.bench_function(BenchmarkId::new(format!("{label}, steps per submit"), k), |bench| {
                bench.iter_custom(|iters| host_time(&ctx, iters, || groups.run(k).unwrap()))
            });
        }
    }
    group.finish();
}

/// Host time per step of 10 000 tensors of 64 elements, each its own buffer, in one group.
fn host_overhead_10000_tensors(c: &mut Criterion) {
    let ctx = context();
    let tensors: Vec<(GpuTensor, GpuTensor)> =
        (0..10_000).map(|_| (GpuTensor::zeros(&ctx, 64).unwrap(), GpuTensor::zeros(&ctx, 64).unwrap())).collect();
    let mut groups = ParamGroups::new(
        &ctx,
        vec![ParamGroup::new(
            AdamW::new(1e-3),
            tensors.iter().map(|t| &t.0).collect(),
            tensors.iter().map(|t| &t.1).collect(),
        )],
    )
    .unwrap();
    let mut group = c.benchmark_group("host overhead, 10 000 tensors");
    group.sample_size(10);
    for k in [1u32, 16] {
        group.throughput(Throughput::Elements(u64::from(k)));
        group.bench_function(BenchmarkId::new("separate buffers, steps per submit", k), |bench| {
            bench.iter_custom(|iters| host_time(&ctx, iters, || groups.run(k).unwrap()))
        });
    }
    group.finish();
}

/// Host time of `iters` calls of `run` (recording and submitting steps); the wait for the
/// GPU after each is outside the clock.
fn host_time(ctx: &GpuContext, iters: u64, mut run: impl FnMut()) -> std::time::Duration {
    let mut host = std::time::Duration::ZERO;
    for _ in 0..iters {
        let t = std::time::Instant::now();
        run();
        host += t.elapsed();
        ctx.wait().unwrap();
    }
    host
}

/// The default adapter's context; without one the bench fails and says how to get one.
fn context() -> GpuContext {
    GpuContext::new()
        .expect("no GPU adapter: install a Vulkan driver (Debian/Ubuntu: apt-get install mesa-vulkan-drivers)")
}

criterion_group! {
    name = benches;
    // Numbers, not pictures: criterion's plots need system fonts that headless machines lack.
    config = Criterion::default().without_plots();
    targets = cpu_steps, host_floor, host_overhead, host_overhead_148_tensors, host_overhead_10000_tensors
}
criterion_main!(benches);
