//! Gradient control on the CPU: the GPU's norm, coefficient, skip decision and loss-scale
//! sequence, computed in the same order, so both sides agree on the control to WGSL's
//! precision (bit for bit where no sqrt or division is involved) and on the parameters
//! within the optimizer's error budget.

mod common;

use common::*;
use wgpu_optim::{
    AdamW, CpuOptimizer, GpuOptimizer, GradControl, NormType, Optimizer, ParamGroups, ScalerGrowth, Threads,
};

/// One optimizer on each side with the same control; `n` elements (several 1024-chunks and
/// a partial one).
fn pair(n: usize, control: GradControl) -> (ParamGroups, CpuOptimizer) {
    let ctx = ctx();
    let o = AdamW::new(1e-2).with_weight_decay(0.1);
    let mut gpu = ParamGroups::from_optimizers(vec![GpuOptimizer::new(&ctx, o.clone(), &params(n)).unwrap()]).unwrap();
    gpu.set_grad_control(Some(control)).unwrap();
    let mut cpu = CpuOptimizer::new(o, &params(n)).unwrap();
    cpu.set_grad_control(Some(control)).unwrap();
    (gpu, cpu)
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// Steps both sides with `grads(k)` scaled by the CPU's current loss scale; returns each
/// side's control after the step.
fn step_both(gpu: &mut ParamGroups, cpu: &mut CpuOptimizer, g: &[f32]) -> ([f32; 4], [f32; 4]) {
    let ctx = gpu.groups()[0].context().clone();
    gpu.groups()[0].grads().write(&ctx, g).unwrap();
    gpu.run(1).unwrap();
    cpu.step(g).unwrap();
    (gpu.read_grad_control().unwrap().unwrap(), cpu.last_grad_control().unwrap())
}

/// `a` within `ulps` f32 ulps of `b`.
fn within_ulps(a: f32, b: f32, ulps: f32) -> bool {
    (a - b).abs() <= ulps * f32::EPSILON * b.abs()
}

#[test]
fn clipping_gives_the_gpus_norm_and_coefficient() {
    // Same sums in the same order. The 2-norm's sqrt is WGSL's (4.5 ulp, not IEEE's 0.5);
    // the coefficient adds the +1e-6 (0.5), WGSL's division (2.5) and the * max_norm (0.5),
    // and the CPU's 1.5: 10 ulp. The inf-norm is a maximum (exact), so only the division
    // and its neighbours remain: 5 ulp.
    for (norm_type, max_norm, norm_ulps, coef_ulps) in
        [(NormType::Two, 3.0f32, 5.0, 10.0), (NormType::Inf, 0.05, 0.0, 5.0)]
    {
        let n = 5 * 1024 + 333;
        let control = GradControl { max_norm: Some(max_norm), norm_type, loss_scale: 1.0, scaler: None };
        let (mut gpu, mut cpu) = pair(n, control);
        for k in 1..=4 {
            let g: Vec<f32> = grads(n, k).iter().map(|x| x * 40.0).collect();
            let (on_gpu, on_cpu) = step_both(&mut gpu, &mut cpu, &g);
            let label = format!("{norm_type:?} step {k}: gpu {on_gpu:?} cpu {on_cpu:?}");
            assert_eq!(bits(&on_gpu[..1]), bits(&on_cpu[..1]), "{label}");
            assert_eq!(on_gpu[2], on_cpu[2], "{label}");
            assert!(within_ulps(on_gpu[3], on_cpu[3], norm_ulps), "{label}: norm");
            assert!(within_ulps(on_gpu[1], on_cpu[1], coef_ulps), "{label}: coefficient");
            assert!(on_cpu[1] < 1.0, "{label}: the norm was not clipped");
        }
        // The coefficient's ulps move each update by as many ulps of its size.
        let budget = AdamW::default().kernel().step_error_budget + coef_ulps;
        let on_gpu = gpu.groups()[0].read_params().unwrap();
        let (on_gpu, on_cpu) = (on_gpu.as_slice().unwrap(), cpu.params().as_slice().unwrap());
        assert_close(&format!("{norm_type:?} params"), on_gpu, on_cpu, 0.04, 4, budget);
    }
}

#[test]
fn unscaling_a_power_of_two_loss_scale_gives_the_plain_step_bits() {
    let n = 3000;
    let mut plain = CpuOptimizer::new(AdamW::new(1e-2), &params(n)).unwrap();
    let mut scaled = CpuOptimizer::new(AdamW::new(1e-2), &params(n)).unwrap();
    scaled.set_grad_control(Some(GradControl { loss_scale: 4096.0, ..Default::default() })).unwrap();
    for k in 1..=3 {
        let g = grads(n, k);
        plain.step(&g).unwrap();
        scaled.step(&g.iter().map(|x| x * 4096.0).collect::<Vec<_>>()).unwrap();
    }
    assert_eq!(bits(plain.params().as_slice().unwrap()), bits(scaled.params().as_slice().unwrap()));
    assert_eq!(scaled.last_grad_control().unwrap()[0], 1.0 / 4096.0);
}

#[test]
fn a_non_finite_gradient_skips_the_step_and_the_scale_follows_the_gpus() {
    let n = 2 * 1024 + 17;
    let growth = ScalerGrowth { growth_factor: 2.0, backoff_factor: 0.5, growth_interval: 2 };
    let control = GradControl { max_norm: Some(1.0), loss_scale: 256.0, scaler: Some(growth), ..Default::default() };
    let (mut gpu, mut cpu) = pair(n, control);
    // Finite, finite (the scale doubles), NaN in the last element (skipped, halved), inf in
    // the first (skipped, halved), finite.
    for k in 1..=5 {
        let scale = cpu.loss_scale().unwrap().0;
        let mut g: Vec<f32> = grads(n, k).iter().map(|x| x * scale).collect();
        match k {
            3 => g[n - 1] = f32::NAN,
            4 => g[0] = f32::NEG_INFINITY,
            _ => {}
        }
        let params_before = bits(cpu.params().as_slice().unwrap());
        let state_before: Vec<Vec<u32>> = cpu.state().map(|(_, t)| bits(t.as_slice().unwrap())).collect();
        let steps_before = cpu.step_count();
        let (on_gpu, on_cpu) = step_both(&mut gpu, &mut cpu, &g);
        assert_eq!(on_gpu[0], on_cpu[0], "step {k}");
        assert_eq!(on_gpu[2], on_cpu[2], "step {k}");
        assert!(within_ulps(on_gpu[1], on_cpu[1], 10.0), "step {k}: {on_gpu:?} vs {on_cpu:?}");
        assert_eq!(gpu.read_loss_scale().unwrap(), cpu.loss_scale(), "after step {k}");
        let skipped = k == 3 || k == 4;
        assert_eq!(on_cpu[2] != 0.0, skipped, "step {k}");
        if skipped {
            assert_eq!(bits(cpu.params().as_slice().unwrap()), params_before, "step {k}");
            let state: Vec<Vec<u32>> = cpu.state().map(|(_, t)| bits(t.as_slice().unwrap())).collect();
            assert_eq!(state, state_before, "step {k}");
            assert_eq!(cpu.step_count(), steps_before, "step {k}");
        } else {
            assert_eq!(cpu.step_count(), steps_before + 1, "step {k}");
        }
    }
    assert_eq!(cpu.loss_scale(), Some((128.0, 1)));
    assert_eq!(gpu.groups()[0].read_gpu_step().unwrap(), cpu.step_count());
}

#[test]
fn the_parallel_baseline_and_a_checkpoint_keep_the_controlled_bits() {
    let n = 70_000;
    let growth = ScalerGrowth { growth_factor: 2.0, backoff_factor: 0.5, growth_interval: 3 };
    let control = GradControl { max_norm: Some(2.0), loss_scale: 8.0, scaler: Some(growth), ..Default::default() };
    let mut seq = CpuOptimizer::new(AdamW::new(1e-2), &params(n)).unwrap();
    seq.set_grad_control(Some(control)).unwrap();
    let mut par = CpuOptimizer::new(AdamW::new(1e-2), &params(n)).unwrap().with_threads(Threads::Parallel);
    par.set_grad_control(Some(control)).unwrap();
    let dir = std::env::temp_dir().join(format!("wgpu-optim-cpu-clip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ckpt.safetensors");
    for k in 1..=6 {
        if k == 3 {
            // Resume the parallel side from a checkpoint: the scale and its tracker come back.
            par.save(&path).unwrap();
            // Checkpoints hold the optimizer's state, not the parameters (as torch's).
            let current = par.params().to_vec();
            let mut resumed = CpuOptimizer::new(AdamW::new(1e-2), &current).unwrap().with_threads(Threads::Parallel);
            resumed.set_grad_control(Some(control)).unwrap();
            let mut unscaled = resumed.clone();
            unscaled.set_grad_control(None).unwrap();
            assert!(unscaled.load(&path).is_err(), "a checkpoint with a scaler needs one configured");
            resumed.load(&path).unwrap();
            assert_eq!(resumed.loss_scale(), par.loss_scale());
            par = resumed;
        }
        let scale = seq.loss_scale().unwrap().0;
        let g: Vec<f32> = grads(n, k).iter().map(|x| x * scale * 30.0).collect();
        seq.step(&g).unwrap();
        par.step(&g).unwrap();
        assert_eq!(seq.last_grad_control(), par.last_grad_control(), "step {k}");
        assert_eq!(bits(seq.params().as_slice().unwrap()), bits(par.params().as_slice().unwrap()), "step {k}");
    }
    assert_eq!(seq.loss_scale(), Some((32.0, 0)));
    std::fs::remove_dir_all(&dir).ok();
}
