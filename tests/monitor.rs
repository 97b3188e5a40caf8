//! Health checks on the GPU: NaN/inf counts and largest magnitudes of parameters and state,
//! and the last step's largest update, against the same figures computed on the host.

mod common;

use common::*;
use wgpu_optim::{
    AdamW, Error, GpuContext, GpuOptimizer, GpuTensor, GradControl, ParamGroup, ParamGroups, Sgd, TensorHealth,
};

/// Several sub-ranges per tensor, in several buffers.
fn small() -> GpuContext {
    ctx_with(|t| {
        t.segment_bytes = 4096;
        t.buffer_bytes = 8192;
    })
}

/// What the check should find in `x`, computed on the host.
fn expected(x: &[f32]) -> (u64, u64, f32) {
    let nan = x.iter().filter(|v| v.is_nan()).count() as u64;
    let inf = x.iter().filter(|v| v.is_infinite()).count() as u64;
    let max = x.iter().filter(|v| v.is_finite()).fold(0.0f32, |m, v| m.max(v.abs()));
    (nan, inf, max)
}

fn host_max_change(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).filter(|d| d.is_finite()).fold(0.0, f32::max)
}

fn find<'a>(h: &'a [TensorHealth], group: usize, name: &str) -> &'a TensorHealth {
    h.iter().find(|t| t.group == group && t.name == name).unwrap_or_else(|| panic!("no {name} in group {group}"))
}

#[test]
fn counts_and_maxima_match_the_host_across_sub_ranges() {
    let ctx = small();
    let n = 5003; // 5 sub-ranges of 1024 and a tail
    let mut gpu = GpuOptimizer::new(&ctx, AdamW::new(1e-3).with_amsgrad(true), &params(n)).unwrap();
    gpu.grads().write(&ctx, &grads(n, 1)).unwrap();
    gpu.run(2).unwrap();
    let healthy = gpu.health().unwrap();
    assert_eq!(
        healthy.iter().map(|t| t.name).collect::<Vec<_>>(),
        ["params", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"]
    );
    for t in &healthy {
        let host = gpu.read_state(t.name).or_else(|_| gpu.read_params()).unwrap().to_vec();
        assert_eq!((t.nan, t.inf, t.max_abs), expected(&host), "{}", t.name);
        assert!(t.is_finite() && t.max_update.is_none() && t.len == n);
    }

    // Plant non-finite values at the ends of sub-ranges and in the tail, in params and state.
    let mut p = gpu.read_params().unwrap().to_vec();
    for (i, v) in [(0, f32::NAN), (1023, f32::INFINITY), (1024, f32::NEG_INFINITY), (4097, f32::NAN), (n - 1, f32::NAN)]
    {
        p[i] = v;
    }
    p[3000] = -1e30; // the largest finite magnitude, negative
    gpu.params().write(&ctx, &p).unwrap();
    let mut v = gpu.read_state("exp_avg_sq").unwrap().to_vec();
    v[2047] = f32::INFINITY;
    v[5000] = -f32::NAN;
    gpu.state_tensor("exp_avg_sq").unwrap().write(&ctx, &v).unwrap();
    let sick = gpu.health().unwrap();
    let params = find(&sick, 0, "params");
    assert_eq!((params.nan, params.inf, params.max_abs), (3, 2, 1e30));
    assert_eq!((params.nan, params.inf, params.max_abs), expected(&p));
    let state = find(&sick, 0, "exp_avg_sq");
    assert_eq!((state.nan, state.inf, state.max_abs), expected(&v));
    assert_eq!((state.nan, state.inf), (1, 1));
    assert!(!params.is_finite() && !state.is_finite() && find(&sick, 0, "exp_avg").is_finite());
}

#[test]
fn tracked_updates_are_the_last_steps_largest_change() {
    let ctx = small();
    let n = 4100;
    let config = AdamW::new(1e-2).with_weight_decay(0.1);
    // One optimizer steps 2 then 1 and is read in between; the other takes 3 in one submit,
    // so its tracking copy is taken inside the submit, before the third step.
    let mut apart = GpuOptimizer::new(&ctx, config.clone(), &params(n)).unwrap();
    let mut together = GpuOptimizer::new(&ctx, config, &params(n)).unwrap();
    together.track_updates(true).unwrap();
    for o in [&apart, &together] {
        o.grads().write(&ctx, &grads(n, 3)).unwrap();
    }
    apart.run(2).unwrap();
    let before = apart.read_params().unwrap().to_vec();
    apart.run(1).unwrap();
    let after = apart.read_params().unwrap().to_vec();
    together.run(3).unwrap();
    assert_eq!(together.read_params().unwrap().to_vec(), after, "tracking changes nothing");
    let h = together.health().unwrap();
    let params = find(&h, 0, "params");
    let change = host_max_change(&after, &before);
    assert!(change > 0.0);
    assert_eq!(params.max_update, Some(change));
    assert_eq!(params.update_ratio(), Some(change / expected(&after).2));

    // One step per submit, then recorded into the caller's encoder: the same figure.
    together.run(1).unwrap();
    let next = together.read_params().unwrap().to_vec();
    assert_eq!(find(&together.health().unwrap(), 0, "params").max_update, Some(host_max_change(&next, &after)));
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    together.record(&mut encoder, 4).unwrap();
    ctx.queue().submit([encoder.finish()]);
    let last = together.read_params().unwrap().to_vec();
    let h = together.health().unwrap();
    assert!(find(&h, 0, "params").max_update.unwrap() < host_max_change(&last, &next), "only the last of 4 steps");

    together.track_updates(false).unwrap();
    assert_eq!(find(&together.health().unwrap(), 0, "params").max_update, None);
}

#[test]
fn groups_report_per_group_and_a_skipped_step_updates_nothing() {
    let ctx = small();
    let p: Vec<GpuTensor> = [3000, 900].iter().map(|&n| GpuTensor::from_slice(&ctx, &params(n)).unwrap()).collect();
    let g: Vec<GpuTensor> = [3000, 900].iter().map(|&n| GpuTensor::from_slice(&ctx, &grads(n, 2)).unwrap()).collect();
    let mut groups = ParamGroups::new(
        &ctx,
        vec![
            ParamGroup {
                optimizer: AdamW::new(1e-2).into(),
                params: vec![&p[0]],
                grads: vec![&g[0]],
                shapes: Vec::new(),
                precision: Default::default(),
            },
            ParamGroup {
                optimizer: Sgd::new(0.1).with_momentum(0.9).into(),
                params: vec![&p[1]],
                grads: vec![&g[1]],
                shapes: Vec::new(),
                precision: Default::default(),
            },
        ],
    )
    .unwrap();
    groups.set_grad_control(Some(GradControl::default())).unwrap();
    groups.track_updates(true).unwrap();
    groups.run(2).unwrap();
    let h = groups.health().unwrap();
    let names: Vec<_> = h.iter().map(|t| (t.group, t.name)).collect();
    assert_eq!(names, [(0, "params"), (0, "exp_avg"), (0, "exp_avg_sq"), (1, "params"), (1, "momentum_buffer")]);
    assert!(h.iter().all(|t| t.is_finite()));
    assert!(find(&h, 0, "params").max_update.unwrap() > 0.0 && find(&h, 1, "params").max_update.unwrap() > 0.0);

    // A NaN gradient skips the step: nothing moves, and the check says so.
    let mut bad = grads(900, 2);
    bad[450] = f32::NAN;
    g[1].write(&ctx, &bad).unwrap();
    groups.run(1).unwrap();
    let h = groups.health().unwrap();
    assert_eq!(find(&h, 0, "params").max_update, Some(0.0));
    assert_eq!(find(&h, 1, "params").max_update, Some(0.0));
    assert!(h.iter().all(|t| t.is_finite()), "the NaN stayed in the gradient");
}

#[test]
fn tracking_needs_parameters_that_can_be_copied() {
    let ctx = ctx();
    let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 4096,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let params = GpuTensor::from_buffer(&ctx, &buffer, 0, 512).unwrap();
    let grads = GpuTensor::from_buffer(&ctx, &buffer, 2048, 512).unwrap();
    let mut gpu = GpuOptimizer::from_tensors(&ctx, Sgd::new(0.1), params, grads).unwrap();
    let err = gpu.track_updates(true).unwrap_err();
    assert!(matches!(err, Error::MissingUsage { missing, .. } if missing == wgpu::BufferUsages::COPY_SRC), "{err}");
    // The check itself reads nothing back from the caller's buffer: it works.
    let h = gpu.health().unwrap();
    assert_eq!((h[0].nan, h[0].inf, h[0].max_abs), (0, 0, 0.0));
}

#[test]
fn adafactor_reports_its_factored_state() {
    let ctx = small();
    // Three 8×100 matrices: each within one 4 KiB sub-range, the tensor over several.
    let shape = [3usize, 8, 100];
    let n = 2400;
    let mut gpu =
        wgpu_optim::GpuOptimizer::with_shape(&ctx, wgpu_optim::Adafactor::default(), &params(n), &shape).unwrap();
    gpu.step(&grads(n, 1)).unwrap();
    let h = gpu.health().unwrap();
    assert_eq!(
        h.iter().map(|t| (t.name, t.len)).collect::<Vec<_>>(),
        [("params", n), ("row_var", 24), ("col_var", 300)]
    );
    for t in &h {
        let host = if t.name == "params" { gpu.read_params() } else { gpu.read_state(t.name) }.unwrap().to_vec();
        assert_eq!((t.nan, t.inf, t.max_abs), expected(&host), "{}", t.name);
    }
    let mut p = gpu.read_params().unwrap().to_vec();
    p[2399] = f32::NAN;
    gpu.params().write(&ctx, &p).unwrap();
    assert_eq!(gpu.health().unwrap()[0].nan, 1);
}
