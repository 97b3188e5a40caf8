//! Fused gradient control: global-norm clipping, loss-scale unscaling and skip-on-inf, on
//! the GPU, over every tensor of every group.

mod common;

use common::*;
use wgpu_optim::{
    AdamW, CpuOptimizer, Error, GpuContext, GpuOptimizer, GpuTensor, GradControl, NormType, Optimizer, ParamGroup,
    ParamGroups, ScalerGrowth, Sgd,
};

/// Three tensors in two groups, several sub-ranges each (small sub-ranges).
fn setup(ctx: &GpuContext, lens: &[usize]) -> (Vec<GpuTensor>, Vec<GpuTensor>) {
    let p = lens.iter().enumerate().map(|(t, &n)| GpuTensor::from_slice(ctx, &params(n + t)[t..]).unwrap()).collect();
    let g = lens.iter().map(|&n| GpuTensor::zeros(ctx, n).unwrap()).collect();
    (p, g)
}

fn small() -> GpuContext {
    ctx_with(|t| {
        t.segment_bytes = 4096;
        t.buffer_bytes = 8192;
    })
}

fn groups(ctx: &GpuContext, p: &[GpuTensor], g: &[GpuTensor]) -> ParamGroups {
    ParamGroups::new(
        ctx,
        vec![
            ParamGroup {
                optimizer: AdamW::new(1e-2).into(),
                params: vec![&p[0], &p[1]],
                grads: vec![&g[0], &g[1]],
                shapes: Vec::new(),
                precision: Default::default(),
            },
            ParamGroup {
                optimizer: Sgd::new(0.1).with_momentum(0.9).into(),
                params: vec![&p[2]],
                grads: vec![&g[2]],
                shapes: Vec::new(),
                precision: Default::default(),
            },
        ],
    )
    .unwrap()
}

#[test]
fn clipping_matches_the_cpu_with_torchs_coefficient() {
    let ctx = small();
    let lens = [3000, 700, 2500];
    let (p, g) = setup(&ctx, &lens);
    let mut gpu = groups(&ctx, &p, &g);
    let max_norm = 5.0f32;
    gpu.set_grad_control(Some(GradControl {
        max_norm: Some(max_norm),
        norm_type: NormType::Two,
        loss_scale: 1.0,
        scaler: None,
    }))
    .unwrap();
    let mut cpu: Vec<CpuOptimizer> = vec![
        CpuOptimizer::new(AdamW::new(1e-2), &[p[0].read(&ctx).unwrap(), p[1].read(&ctx).unwrap()].concat()).unwrap(),
        CpuOptimizer::new(Sgd::new(0.1).with_momentum(0.9), &p[2].read(&ctx).unwrap()).unwrap(),
    ];
    for k in 1..=3 {
        let host: Vec<Vec<f32>> = lens.iter().enumerate().map(|(t, &n)| grads(n + 7 * t, k)[..n].to_vec()).collect();
        for (t, h) in host.iter().enumerate() {
            g[t].write(&ctx, h).unwrap();
        }
        gpu.run(1).unwrap();
        // torch: total = ‖all grads‖₂; coef = clamp(max_norm / (total + 1e-6), max=1); g *= coef.
        let total = host.iter().flatten().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
        let coef = ((1.0 / (total as f32 + 1e-6)) * max_norm).min(1.0);
        assert!(coef < 1.0, "the test should clip");
        let read = gpu.read_grad_control().unwrap().unwrap();
        assert!((f64::from(read[3]) - total).abs() <= 1e-5 * total, "norm {} vs {total}", read[3]);
        assert_eq!(read[2], 0.0);
        let clipped: Vec<Vec<f32>> = host.iter().map(|h| h.iter().map(|&x| (x * 1.0) * coef).collect()).collect();
        cpu[0].step(&[clipped[0].clone(), clipped[1].clone()].concat()).unwrap();
        cpu[1].step(&clipped[2]).unwrap();
    }
    // The GPU's norm is an f32 tree sum, the CPU's f64: the coefficient agrees to a few ε,
    // which moves each update by a few ε of its size on top of the step budget.
    let got = [p[0].read(&ctx).unwrap(), p[1].read(&ctx).unwrap()].concat();
    let budget = AdamW::default().kernel().step_error_budget + 8.0;
    assert_close("adamw group", &got, cpu[0].params().as_slice().unwrap(), 3e-2, 3, budget);
    let budget = Sgd::default().kernel().step_error_budget + 8.0;
    assert_close("sgd group", &p[2].read(&ctx).unwrap(), cpu[1].params().as_slice().unwrap(), 0.5, 3, budget);
}

#[test]
fn a_nan_in_the_last_sub_range_of_the_last_tensor_skips_the_step_bit_identically() {
    let ctx = small();
    let lens = [3000, 700, 2500];
    let (p, g) = setup(&ctx, &lens);
    let mut gpu = groups(&ctx, &p, &g);
    gpu.set_grad_control(Some(GradControl { max_norm: Some(1.0), ..Default::default() })).unwrap();
    for (t, &n) in lens.iter().enumerate() {
        g[t].write(&ctx, &grads(n, 1)).unwrap();
    }
    gpu.run(2).unwrap();
    let snapshot = |gpu: &ParamGroups| {
        let mut all: Vec<Vec<f32>> = p.iter().map(|t| t.read(&ctx).unwrap()).collect();
        for o in gpu.groups() {
            for (slot, _) in o.state() {
                all.push(o.read_state(slot.torch_name).unwrap().to_vec());
            }
        }
        let steps: Vec<u64> = gpu.groups().iter().map(|o| o.read_gpu_step().unwrap()).collect();
        (all.iter().map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()).collect::<Vec<_>>(), steps)
    };
    let before = snapshot(&gpu);
    assert_eq!(before.1, vec![2, 2]);
    // The last tensor spans several 1024-element sub-ranges; plant a NaN in its last one.
    let last = g[2].segments().len();
    assert!(last > 1);
    let mut bad = grads(lens[2], 2);
    let at = lens[2] - g[2].segments()[last - 1].len / 2;
    bad[at] = f32::NAN;
    g[2].write(&ctx, &bad).unwrap();
    for t in 0..2 {
        g[t].write(&ctx, &grads(lens[t], 2)).unwrap();
    }
    gpu.run(1).unwrap();
    assert_eq!(snapshot(&gpu), before, "a skipped step must change nothing");
    assert_eq!(gpu.read_grad_control().unwrap().unwrap()[2], 1.0, "found_inf");
    // An infinity in the first tensor skips too; finite gradients then step again.
    let mut inf = grads(lens[0], 3);
    inf[0] = f32::NEG_INFINITY;
    g[0].write(&ctx, &inf).unwrap();
    gpu.run(1).unwrap();
    assert_eq!(snapshot(&gpu), before);
    for (t, &n) in lens.iter().enumerate() {
        g[t].write(&ctx, &grads(n, 3)).unwrap();
    }
    gpu.run(1).unwrap();
    assert_eq!(snapshot(&gpu).1, vec![3, 3]);
}

#[test]
fn unscaling_a_power_of_two_loss_scale_is_exact() {
    // Gradients carrying a loss scale of 1024, unscaled inside the step, give the same bits
    // as unscaled gradients without any control.
    let ctx = small();
    let lens = [1500, 300, 900];
    let (p1, g1) = setup(&ctx, &lens);
    let (p2, g2) = setup(&ctx, &lens);
    let mut plain = groups(&ctx, &p1, &g1);
    let mut scaled = groups(&ctx, &p2, &g2);
    scaled.set_grad_control(Some(GradControl { loss_scale: 1024.0, ..Default::default() })).unwrap();
    for k in 1..=3 {
        for (t, &n) in lens.iter().enumerate() {
            let h = grads(n, k);
            g1[t].write(&ctx, &h).unwrap();
            g2[t].write(&ctx, &h.iter().map(|x| x * 1024.0).collect::<Vec<_>>()).unwrap();
        }
        plain.run(1).unwrap();
        scaled.run(1).unwrap();
    }
    for t in 0..3 {
        assert_eq!(p1[t].read(&ctx).unwrap(), p2[t].read(&ctx).unwrap());
    }
    // Turning the control off again restores the plain kernels.
    scaled.set_grad_control(None).unwrap();
    assert!(scaled.read_grad_control().unwrap().is_none());
    assert!(scaled.set_grad_control(Some(GradControl { loss_scale: 0.0, ..Default::default() })).is_err());
}

#[test]
fn the_loss_scale_backs_off_on_inf_and_grows_after_its_interval_on_the_gpu() {
    // GradScaler(init_scale=1024, growth_factor=2, backoff_factor=0.5, growth_interval=3):
    // three finite steps double the scale; an infinity halves it and skips the step. The
    // gradients each step carry the scale of that step, and unscaled inside the step they
    // give the same bits as plain gradients (every scale here is a power of two).
    let ctx = small();
    let lens = [1500, 300, 900];
    let (p1, g1) = setup(&ctx, &lens);
    let (p2, g2) = setup(&ctx, &lens);
    let mut plain = groups(&ctx, &p1, &g1);
    let mut scaled = groups(&ctx, &p2, &g2);
    let growth = ScalerGrowth { growth_factor: 2.0, backoff_factor: 0.5, growth_interval: 3 };
    scaled
        .set_grad_control(Some(GradControl { loss_scale: 1024.0, scaler: Some(growth), ..Default::default() }))
        .unwrap();
    let mut scale = 1024.0f32;
    let expected = [(1024.0, 1), (1024.0, 2), (2048.0, 0), (2048.0, 1)];
    for (k, &(want_scale, want_tracker)) in expected.iter().enumerate() {
        for (t, &n) in lens.iter().enumerate() {
            let h = grads(n, k + 1);
            g1[t].write(&ctx, &h).unwrap();
            g2[t].write(&ctx, &h.iter().map(|x| x * scale).collect::<Vec<_>>()).unwrap();
        }
        plain.run(1).unwrap();
        scaled.run(1).unwrap();
        assert_eq!(scaled.read_loss_scale().unwrap(), Some((want_scale, want_tracker)), "after step {}", k + 1);
        scale = want_scale;
    }
    for t in 0..3 {
        assert_eq!(p1[t].read(&ctx).unwrap(), p2[t].read(&ctx).unwrap());
    }
    // An overflowing gradient: the step is skipped and the scale backs off.
    let before: Vec<Vec<f32>> = p2.iter().map(|t| t.read(&ctx).unwrap()).collect();
    let mut inf = grads(lens[1], 9);
    inf[5] = f32::INFINITY;
    g2[1].write(&ctx, &inf).unwrap();
    scaled.run(1).unwrap();
    assert_eq!(scaled.read_loss_scale().unwrap(), Some((1024.0, 0)));
    assert_eq!(p2.iter().map(|t| t.read(&ctx).unwrap()).collect::<Vec<_>>(), before);
    assert_eq!(scaled.groups()[0].read_gpu_step().unwrap(), 4);
    assert!(scaled.loss_scale_buffer().is_some());
    let bad = ScalerGrowth { growth_factor: 0.5, ..ScalerGrowth::default() };
    assert!(scaled.set_grad_control(Some(GradControl { scaler: Some(bad), ..Default::default() })).is_err());
}

#[test]
fn the_norm_can_be_logged_on_the_gpu_without_a_readback_per_step() {
    let ctx = small();
    let lens = [3000, 700, 2500];
    let (p, g) = setup(&ctx, &lens);
    let mut gpu = groups(&ctx, &p, &g);
    gpu.set_grad_control(Some(GradControl { max_norm: Some(1.0), ..Default::default() })).unwrap();
    let log = GpuTensor::zeros(&ctx, 3).unwrap();
    let log_at = &log.segments()[0];
    let mut norms = Vec::new();
    let mut sources = Vec::new();
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    for k in 0..3 {
        // In one encoder: step k's gradients copied in (as a backward pass would write them),
        // the step, then its norm copied into slot k of the log.
        let host: Vec<Vec<f32>> =
            lens.iter().map(|&n| grads(n, k + 1).iter().map(|x| x * (k + 1) as f32).collect()).collect();
        norms.push(host.iter().flatten().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt());
        for (t, h) in host.iter().enumerate() {
            let source = GpuTensor::from_slice(&ctx, h).unwrap();
            for (from, to) in source.segments().iter().zip(g[t].segments()) {
                encoder.copy_buffer_to_buffer(&from.buffer, from.offset, &to.buffer, to.offset, 4 * from.len as u64);
            }
            sources.push(source);
        }
        gpu.record(&mut encoder, 1).unwrap();
        let control = gpu.grad_control_buffer().unwrap();
        encoder.copy_buffer_to_buffer(control, 12, &log_at.buffer, log_at.offset + 4 * k as u64, 4);
    }
    ctx.queue().submit([encoder.finish()]);
    let logged = log.read(&ctx).unwrap();
    for (n, want) in logged.iter().zip(&norms) {
        assert!((f64::from(*n) - want).abs() <= 1e-5 * want, "{logged:?} vs {norms:?}");
    }
    assert!(norms[0] < norms[1] && norms[1] < norms[2]);
    assert_eq!(logged[2], gpu.read_grad_control().unwrap().unwrap()[3]);
}

#[test]
fn hundreds_of_skipped_steps_cost_nothing_and_lose_no_step() {
    let ctx = small();
    let lens = [3000, 700, 2500];
    let (p, g) = setup(&ctx, &lens);
    let (fresh_p, fresh_g) = setup(&ctx, &lens);
    let mut skipping = groups(&ctx, &p, &g);
    let mut fresh = groups(&ctx, &fresh_p, &fresh_g);
    for groups in [&mut skipping, &mut fresh] {
        groups.set_grad_control(Some(GradControl { max_norm: Some(2.0), ..Default::default() })).unwrap();
    }
    let write = |g: &[GpuTensor], k: usize, nan: bool| {
        for (t, &n) in lens.iter().enumerate() {
            let mut host = grads(n, k);
            if nan && t == 2 {
                host[n - 1] = f32::NAN;
            }
            g[t].write(&ctx, &host).unwrap();
        }
    };
    // 300 steps of NaN gradients through `run`, which syncs by itself.
    write(&g, 1, true);
    skipping.run(300).unwrap();
    assert_eq!(skipping.groups()[0].read_gpu_step().unwrap(), 0);
    // 300 more recorded into our own encoders without a sync: the first finite step finds its
    // scalars overwritten and is not taken; sync reports it once, then steps run again.
    for _ in 0..3 {
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        skipping.record(&mut encoder, 100).unwrap();
        ctx.queue().submit([encoder.finish()]);
    }
    write(&g, 1, false);
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    skipping.record(&mut encoder, 1).unwrap();
    ctx.queue().submit([encoder.finish()]);
    assert_eq!(skipping.groups()[0].read_gpu_step().unwrap(), 0, "stale: not taken");
    assert!(matches!(skipping.sync(), Err(Error::StaleSteps { taken: 0 })));
    assert_eq!(skipping.sync().unwrap(), 0);
    // `run` syncs by itself, and reports a stale step the same way.
    write(&g, 1, true);
    for _ in 0..3 {
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        skipping.record(&mut encoder, 100).unwrap();
        ctx.queue().submit([encoder.finish()]);
    }
    write(&g, 1, false);
    assert!(matches!(skipping.run(1), Err(Error::StaleSteps { taken: 0 })));
    for k in 1..=3 {
        write(&g, k, false);
        write(&fresh_g, k, false);
        skipping.run(1).unwrap();
        fresh.run(1).unwrap();
    }
    for (a, b) in p.iter().zip(&fresh_p) {
        assert_eq!(a.read(&ctx).unwrap(), b.read(&ctx).unwrap(), "as if the skipped steps never were");
    }
    assert_eq!(skipping.groups()[0].read_gpu_step().unwrap(), 3);
}

#[test]
fn the_norm_and_the_clipped_step_are_the_same_bits_run_to_run() {
    let lens = [3000, 700, 2500];
    let run = || {
        // A context and buffers of its own each time.
        let ctx = small();
        let (p, g) = setup(&ctx, &lens);
        let mut gpu = groups(&ctx, &p, &g);
        gpu.set_grad_control(Some(GradControl { max_norm: Some(0.5), ..Default::default() })).unwrap();
        let mut norms = Vec::new();
        for k in 1..=3 {
            for (t, &n) in lens.iter().enumerate() {
                g[t].write(&ctx, &grads(n + t, k)[..n]).unwrap();
            }
            gpu.run(1).unwrap();
            norms.push(gpu.read_grad_control().unwrap().unwrap()[3].to_bits());
        }
        let params: Vec<Vec<u32>> =
            p.iter().map(|t| t.read(&ctx).unwrap().iter().map(|x| x.to_bits()).collect()).collect();
        (norms, params)
    };
    let first = run();
    assert_eq!(first, run());
    assert!(first.0.iter().all(|&n| f32::from_bits(n) > 0.5), "the test should clip");
}

#[test]
fn a_lone_optimizer_gets_gradient_control_through_one_group() {
    // An optimizer that has already stepped, wrapped as one group with clipping, continues
    // exactly as groups built with clipping from the start (same state, same steps).
    let ctx = small();
    let n = 3000;
    let start = params(n);
    let config = AdamW::new(1e-2);
    let control = GradControl { max_norm: Some(0.5), ..Default::default() };
    let mut lone = GpuOptimizer::new(&ctx, config.clone(), &start).unwrap();
    let (p, g) = (GpuTensor::from_slice(&ctx, &start).unwrap(), GpuTensor::zeros(&ctx, n).unwrap());
    let mut built = ParamGroups::new(
        &ctx,
        vec![ParamGroup {
            optimizer: config.into(),
            params: vec![&p],
            grads: vec![&g],
            shapes: Vec::new(),
            precision: Default::default(),
        }],
    )
    .unwrap();
    for k in 1..=2 {
        lone.step(&grads(n, k)).unwrap();
        g.write(&ctx, &grads(n, k)).unwrap();
        built.run(1).unwrap();
    }
    let mut wrapped = ParamGroups::from_optimizers(vec![lone]).unwrap();
    wrapped.set_grad_control(Some(control)).unwrap();
    built.set_grad_control(Some(control)).unwrap();
    for k in 3..=5 {
        wrapped.groups()[0].grads().write(&ctx, &grads(n, k)).unwrap();
        g.write(&ctx, &grads(n, k)).unwrap();
        wrapped.run(1).unwrap();
        built.run(1).unwrap();
    }
    assert_eq!(wrapped.read_grad_control().unwrap(), built.read_grad_control().unwrap());
    assert!(wrapped.read_grad_control().unwrap().unwrap()[1] < 1.0, "the test should clip");
    assert_eq!(wrapped.groups()[0].read_params().unwrap(), built.groups()[0].read_params().unwrap());
    assert_eq!(wrapped.groups()[0].read_gpu_step().unwrap(), 5);
    // Optimizers of two devices cannot share a pass.
    let other = GpuOptimizer::new(&small(), AdamW::default(), &params(64)).unwrap();
    let here = GpuOptimizer::new(&ctx, AdamW::default(), &params(64)).unwrap();
    assert!(matches!(ParamGroups::from_optimizers(vec![here, other]), Err(Error::ForeignDevice { .. })));
}
