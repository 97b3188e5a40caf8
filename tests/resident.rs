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
            },
            ParamGroup {
                optimizer: wgpu_optim::Sgd::new(0.1).with_momentum(0.9).into(),
                params: vec![&p[2], &p[3]],
                grads: vec![&g[2], &g[3]],
                shapes: Vec::new(),
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
