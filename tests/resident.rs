//! Steps stay on the GPU: the step counter lives there, K steps recorded into one encoder
//! equal K separate steps, and recording more steps creates no more wgpu objects (no
//! per-step buffers, bind groups or pipelines) — the counts come from wgpu's own counters.

mod common;

use common::*;
use wgpu_optim::{GpuOptimizer, ParamGroup, ParamGroups};

#[test]
fn k_steps_in_one_encoder_equal_k_step_calls_for_every_variant() {
    let ctx = ctx();
    let n = 1029;
    let g = grads(n, 1);
    for (label, opt) in variants() {
        let mut calls = GpuOptimizer::new(&ctx, opt.clone_box(), &params(n)).unwrap();
        let mut recorded = GpuOptimizer::new(&ctx, opt.clone_box(), &params(n)).unwrap();
        calls.grads().write(&ctx, &g).unwrap();
        recorded.grads().write(&ctx, &g).unwrap();
        for _ in 0..12 {
            calls.run(1).unwrap();
        }
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        recorded.record(&mut encoder, 12).unwrap();
        ctx.queue().submit([encoder.finish()]);
        assert_eq!(calls.read_params().unwrap(), recorded.read_params().unwrap(), "{label}");
        assert_eq!(recorded.step_count(), 12);
        // The counter the kernels index their scalars by lives on the GPU and advanced with
        // each recorded step.
        assert_eq!(recorded.read_gpu_step().unwrap(), 12, "{label}");
        assert_eq!(calls.read_gpu_step().unwrap(), 12, "{label}");
    }
}

#[test]
fn more_steps_create_no_more_wgpu_objects() {
    let ctx = ctx();
    let n = 5000;
    let p: Vec<_> = (0..4).map(|t| wgpu_optim::GpuTensor::from_slice(&ctx, &params(n + t)).unwrap()).collect();
    let g: Vec<_> = (0..4).map(|t| wgpu_optim::GpuTensor::zeros(&ctx, n + t).unwrap()).collect();
    let mut groups = ParamGroups::new(
        &ctx,
        vec![
            ParamGroup {
                optimizer: wgpu_optim::AdamW::new(1e-3).into(),
                params: vec![&p[0], &p[1]],
                grads: vec![&g[0], &g[1]],
                shapes: Vec::new(),
                precision: Default::default(),
            },
            ParamGroup {
                optimizer: wgpu_optim::Sgd::new(0.1).with_momentum(0.9).into(),
                params: vec![&p[2], &p[3]],
                grads: vec![&g[2], &g[3]],
                shapes: Vec::new(),
                precision: Default::default(),
            },
        ],
    )
    .unwrap();
    groups.run(1).unwrap();
    ctx.wait().unwrap();
    let count = |ctx: &wgpu_optim::GpuContext| {
        let c = ctx.device().get_internal_counters().hal;
        (c.buffers.read(), c.bind_groups.read(), c.compute_pipelines.read(), c.shader_modules.read())
    };
    let before = count(&ctx);
    assert!(before.0 > 0 && before.1 > 0, "wgpu's counters are off: enable wgpu's `counters` feature");
    groups.run(1).unwrap();
    ctx.wait().unwrap();
    let after_one = count(&ctx);
    for k in [10, 100, 256] {
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        groups.record(&mut encoder, k).unwrap();
        ctx.queue().submit([encoder.finish()]);
        ctx.wait().unwrap();
        groups.run(k).unwrap();
        ctx.wait().unwrap();
    }
    assert_eq!(count(&ctx), after_one, "(buffers, bind groups, pipelines, shader modules) grew with the step count");
    assert_eq!(before, after_one);
}

#[test]
fn adafactor_counts_its_steps_on_the_gpu() {
    let ctx = ctx();
    let shape = [3, 17, 9];
    let n = 3 * 17 * 9;
    let mut calls =
        wgpu_optim::GpuOptimizer::with_shape(&ctx, wgpu_optim::Adafactor::new(1e-2), &params(n), &shape).unwrap();
    let mut recorded =
        wgpu_optim::GpuOptimizer::with_shape(&ctx, wgpu_optim::Adafactor::new(1e-2), &params(n), &shape).unwrap();
    calls.grads().write(&ctx, &grads(n, 1)).unwrap();
    recorded.grads().write(&ctx, &grads(n, 1)).unwrap();
    for _ in 0..9 {
        calls.run(1).unwrap();
    }
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    recorded.record(&mut encoder, 9).unwrap();
    ctx.queue().submit([encoder.finish()]);
    assert_eq!(calls.read_params().unwrap(), recorded.read_params().unwrap());
    assert_eq!(recorded.read_gpu_step().unwrap(), 9);
}

/// The caller's own kernel: halves a gradient in place.
fn halving_kernel(ctx: &wgpu_optim::GpuContext) -> wgpu::ComputePipeline {
    ctx.compile_kernel(
        "halve",
        "@group(0) @binding(0) var<storage, read_write> g: array<f32>;
         @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
             if id.x < arrayLength(&g) { g[id.x] = g[id.x] * 0.5; }
         }",
        "main",
    )
    .unwrap()
}

#[test]
fn steps_recorded_into_the_callers_compute_pass_equal_steps_run_alone() {
    use wgpu_optim::{AdamW, Error, GpuTensor};
    let ctx = ctx();
    let n = 1001;
    let halve = halving_kernel(&ctx);
    let half = |k| grads(n, k).iter().map(|g| g * 0.5).collect::<Vec<f32>>();
    let mut theirs = GpuOptimizer::new(&ctx, AdamW::new(1e-2).with_weight_decay(0.1), &params(n)).unwrap();
    let mut alone = GpuOptimizer::new(&ctx, AdamW::new(1e-2).with_weight_decay(0.1), &params(n)).unwrap();
    let group = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &halve.get_bind_group_layout(0),
        entries: &[wgpu::BindGroupEntry { binding: 0, resource: theirs.grads().segments()[0].binding() }],
    });
    for k in 1..=3 {
        // The caller's pass: its kernel writes the gradients, then the step reads them.
        theirs.grads().write(&ctx, &grads(n, k)).unwrap();
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&halve);
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups((n as u32).div_ceil(64), 1, 1);
            theirs.record_in_pass(&mut pass, 1).unwrap();
        }
        ctx.queue().submit([encoder.finish()]);
        alone.step(&half(k)).unwrap();
    }
    // Several steps in one pass, then one alone.
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        theirs.record_in_pass(&mut pass, 4).unwrap();
    }
    ctx.queue().submit([encoder.finish()]);
    alone.run(4).unwrap();
    assert_eq!((theirs.step_count(), theirs.sync().unwrap()), (7, 7));
    let bits = |t: &GpuOptimizer, what: &str| -> Vec<u32> {
        let v = if what == "params" { t.read_params() } else { t.read_state(what) };
        v.unwrap().iter().map(|x| x.to_bits()).collect()
    };
    for what in ["params", "exp_avg", "exp_avg_sq"] {
        assert_eq!(bits(&theirs, what), bits(&alone, what), "{what}: bit for bit");
    }

    // Update tracking copies between passes: refused, and nothing changes.
    theirs.track_updates(true).unwrap();
    let before = bits(&theirs, "params");
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        match theirs.record_in_pass(&mut pass, 1) {
            Err(Error::Unsupported(m)) => assert!(m.contains("update tracking") && m.contains("record"), "{m}"),
            other => panic!("expected Unsupported, got {other:?}"),
        }
        assert!(matches!(theirs.record_in_pass(&mut pass, 257), Err(Error::OverLimit(_))));
    }
    ctx.queue().submit([encoder.finish()]);
    assert_eq!((theirs.step_count(), bits(&theirs, "params")), (7, before));

    // Parameter groups, two of them, in the caller's pass.
    let lens = [300, 64, 1000];
    let make = || -> (Vec<GpuTensor>, Vec<GpuTensor>) {
        let p = lens.iter().map(|&n| GpuTensor::from_slice(&ctx, &params(n)).unwrap()).collect();
        let g = lens.iter().map(|&n| GpuTensor::from_slice(&ctx, &grads(n, 1)).unwrap()).collect();
        (p, g)
    };
    let ((pa, ga), (pb, gb)) = (make(), make());
    let groups = |p: &[GpuTensor], g: &[GpuTensor]| {
        ParamGroups::new(
            &ctx,
            vec![
                ParamGroup::new(AdamW::new(1e-2), vec![&p[0], &p[1]], vec![&g[0], &g[1]]),
                ParamGroup::new(AdamW::new(3e-3).with_weight_decay(0.0), vec![&p[2]], vec![&g[2]]),
            ],
        )
        .unwrap()
    };
    let (mut in_pass, mut run) = (groups(&pa, &ga), groups(&pb, &gb));
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        in_pass.record_in_pass(&mut pass, 3).unwrap();
    }
    ctx.queue().submit([encoder.finish()]);
    run.run(3).unwrap();
    for (a, b) in pa.iter().zip(&pb) {
        assert_eq!(a.read(&ctx).unwrap(), b.read(&ctx).unwrap());
    }
}

#[test]
fn a_recorded_step_that_never_runs_is_reported_and_the_count_carries_on() {
    use wgpu_optim::{AdamW, CpuOptimizer, Error, Optimizer};
    let ctx = ctx();
    let n = 1001;
    let mut gpu = GpuOptimizer::new(&ctx, AdamW::new(1e-2), &params(n)).unwrap();
    let mut cpu = CpuOptimizer::new(AdamW::new(1e-2), &params(n)).unwrap();
    gpu.grads().write(&ctx, &grads(n, 1)).unwrap();
    gpu.run(3).unwrap();
    for _ in 0..3 {
        cpu.step(&grads(n, 1)).unwrap();
    }
    // A step recorded into an encoder that is dropped, never submitted.
    let mut lost = ctx.device().create_command_encoder(&Default::default());
    gpu.record(&mut lost, 1).unwrap();
    drop(lost);
    // The next step finds the counter older than it should be and is not taken; the one after
    // carries on from the newer count, as step 4 (with step 4's scalars: bias corrections).
    gpu.run(2).unwrap();
    cpu.step(&grads(n, 1)).unwrap();
    match gpu.sync() {
        Err(Error::StaleSteps { taken }) => assert_eq!(taken, 4),
        other => panic!("expected StaleSteps, got {other:?}"),
    }
    let got = gpu.read_params().unwrap().to_vec();
    let want = cpu.params().to_vec();
    let change = max_change(&params(n), &want);
    assert_close("after a lost step", &got, &want, change, 4, AdamW::default().kernel().step_error_budget);
    // Synced, later steps run normally: GPU and CPU agree again, and the count is the GPU's.
    gpu.run(1).unwrap();
    cpu.step(&grads(n, 1)).unwrap();
    assert_eq!(gpu.sync().unwrap(), 5);
    let (got, want) = (gpu.read_params().unwrap().to_vec(), cpu.params().to_vec());
    let budget = AdamW::default().kernel().step_error_budget;
    assert_close("after the sync", &got, &want, max_change(&params(n), &want), 5, budget);
    // The lost step as the last one recorded: sync finds the newer counter.
    let mut lost = ctx.device().create_command_encoder(&Default::default());
    gpu.record(&mut lost, 2).unwrap();
    drop(lost);
    match gpu.sync() {
        Err(Error::StaleSteps { taken }) => assert_eq!(taken, 5),
        other => panic!("expected StaleSteps, got {other:?}"),
    }
    assert_eq!(gpu.step_count(), 5);
    gpu.run(1).unwrap();
    assert_eq!(gpu.sync().unwrap(), 6);
}
