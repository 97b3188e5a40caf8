//! Shared test fixtures: the GPU context, reproducible inputs and the variant table.
#![allow(dead_code)]

use wgpu_optim::{
    AdaBelief, Adadelta, Adafactor, Adagrad, Adam, AdamW, Adamax, Adan, GpuContext, Lamb, Lars, Lion, NAdam, Optimizer,
    RAdam, RmsProp, Sgd, Tuning,
};

/// The default adapter. Never skips: without one the test fails and says what to install.
pub fn ctx() -> GpuContext {
    GpuContext::new().unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"))
}

/// The default adapter with other tuning.
pub fn ctx_with(f: impl FnOnce(&mut Tuning)) -> GpuContext {
    let base = ctx();
    let mut t = base.tuning().clone();
    f(&mut t);
    base.with_tuning(t).unwrap_or_else(|e| panic!("test tuning rejected: {e}"))
}

/// Initial parameter `i`: a multiple of 1/512 in [-1.95, 1.95], exact in f32 and f64, so
/// other tools (the torch script quoted in `cpu_reference.rs`) can rebuild the same inputs.
pub fn param(i: usize) -> f32 {
    (((i * 7919 + 13) % 2001) as f32 - 1000.0) / 512.0
}

/// Gradient `i` at step `k` (1-based): a multiple of 1/1024 in [-0.98, 0.98], varying per step.
pub fn grad(i: usize, k: usize) -> f32 {
    (((i * 104729 + k * 7717 + 5) % 2001) as f32 - 1000.0) / 1024.0
}

/// Gradient `i` at step `k` in `format`, its significand odd and of the format's full width
/// `b` bits (2^(b-1) + 1 to 2^b - 1), in [2^-6, 1): `p = -g / wd` then never holds exactly
/// for a `p` of the format (its significand would be `g`'s times 5, wider than `b` bits), so
/// the L2 direction `g + wd · p` never cancels to the size of its rounding error, where
/// fused and unfused multiply-adds part.
pub fn odd_grads(format: wgpu_optim::ElementFormat, n: usize, k: usize) -> Vec<f32> {
    let b = if format == wgpu_optim::ElementFormat::BF16 { 8 } else { 11 };
    (0..n)
        .map(|i| {
            let h = (i * 104_729 + k * 7_717 + 5) % 8192;
            let sign = if h.is_multiple_of(2) { 1.0 } else { -1.0 };
            let m = (1 << (b - 1)) + 1 + 2 * (h / 2 % (1 << (b - 2)));
            sign * m as f32 * 2f32.powi(-b - (h / 4096 + 2 * (h % 3)) as i32)
        })
        .collect()
}

pub fn params(n: usize) -> Vec<f32> {
    (0..n).map(param).collect()
}

pub fn grads(n: usize, k: usize) -> Vec<f32> {
    (0..n).map(|i| grad(i, k)).collect()
}

/// Every optimizer × variant the tests cover, with a label. The labels that
/// `scripts/torch_reference.py` also runs name the same configurations there.
pub fn variants() -> Vec<(&'static str, Box<dyn Optimizer>)> {
    vec![
        ("sgd", Sgd::new(0.1).into()),
        ("sgd momentum", Sgd::new(0.1).with_momentum(0.9).into()),
        ("sgd momentum dampening", Sgd::new(0.1).with_momentum(0.9).with_dampening(0.25).into()),
        ("sgd nesterov", Sgd::new(0.1).with_momentum(0.9).with_nesterov(true).into()),
        ("sgd weight_decay", Sgd::new(0.1).with_weight_decay(0.05).into()),
        ("sgd maximize", Sgd::new(0.1).with_maximize(true).into()),
        (
            "sgd nesterov wd maximize",
            Sgd::new(0.1).with_momentum(0.8).with_nesterov(true).with_weight_decay(0.01).with_maximize(true).into(),
        ),
        ("adam", Adam::new(1e-2).into()),
        ("adam l2", Adam::new(1e-2).with_weight_decay(0.1).into()),
        ("adam amsgrad", Adam::new(1e-2).with_amsgrad(true).into()),
        ("adam l2 amsgrad", Adam::new(1e-2).with_weight_decay(0.1).with_amsgrad(true).into()),
        // beta1 < 0.5 takes lerp's other branch (weight 1 - beta1 >= 0.5).
        ("adam maximize low beta1", Adam::new(1e-2).with_maximize(true).with_betas(0.3, 0.99).into()),
        ("adamw", AdamW::new(1e-2).into()),
        ("adamw no decay", AdamW::new(1e-2).with_weight_decay(0.0).into()),
        ("adamw amsgrad wd", AdamW::new(1e-2).with_amsgrad(true).with_weight_decay(0.3).into()),
        ("adamw maximize", AdamW::new(1e-2).with_maximize(true).with_weight_decay(0.3).into()),
        ("nadam", NAdam::new(1e-2).into()),
        ("nadam l2 momentum_decay", NAdam::new(1e-2).with_weight_decay(0.1).with_momentum_decay(0.01).into()),
        (
            "nadam decoupled maximize",
            NAdam::new(1e-2).with_weight_decay(0.1).with_decoupled_weight_decay(true).with_maximize(true).into(),
        ),
        ("radam", RAdam::new(1e-2).with_betas(0.9, 0.99).into()),
        ("radam l2 maximize", RAdam::new(1e-2).with_betas(0.9, 0.99).with_weight_decay(0.1).with_maximize(true).into()),
        (
            "radam decoupled",
            RAdam::new(1e-2).with_betas(0.9, 0.99).with_weight_decay(0.1).with_decoupled_weight_decay(true).into(),
        ),
        ("adagrad", Adagrad::new(0.1).into()),
        (
            "adagrad decay init l2 maximize",
            Adagrad::new(0.1)
                .with_lr_decay(0.1)
                .with_initial_accumulator_value(0.5)
                .with_weight_decay(0.1)
                .with_maximize(true)
                .into(),
        ),
        ("rmsprop", RmsProp::new(1e-2).into()),
        ("rmsprop centered", RmsProp::new(1e-2).with_centered(true).into()),
        ("rmsprop momentum", RmsProp::new(1e-2).with_momentum(0.9).into()),
        (
            "rmsprop centered momentum l2 maximize",
            RmsProp::new(1e-2)
                .with_alpha(0.9)
                .with_centered(true)
                .with_momentum(0.5)
                .with_weight_decay(0.1)
                .with_maximize(true)
                .into(),
        ),
        ("adamax", Adamax::new(1e-2).into()),
        (
            "adamax l2 maximize",
            Adamax::new(1e-2).with_weight_decay(0.1).with_maximize(true).with_betas(0.3, 0.9).into(),
        ),
        ("adadelta", Adadelta::default().into()),
        (
            "adadelta rho l2 maximize",
            Adadelta::new(0.5).with_rho(0.5).with_weight_decay(0.1).with_maximize(true).into(),
        ),
        ("adabelief", AdaBelief::new(1e-2).with_betas(0.9, 0.99).into()),
        (
            "adabelief unrectified amsgrad",
            AdaBelief::new(1e-2).with_rectify(false).with_amsgrad(true).with_eps(1e-8).into(),
        ),
        (
            "adabelief l2 no sgd",
            AdaBelief::new(1e-2)
                .with_weight_decouple(false)
                .with_weight_decay(0.1)
                .with_degenerated_to_sgd(false)
                .with_betas(0.9, 0.99)
                .into(),
        ),
        ("adabelief fixed decay", AdaBelief::new(1e-2).with_weight_decay(0.01).with_fixed_decay(true).into()),
        ("adabelief amsgrad", AdaBelief::new(1e-2).with_amsgrad(true).with_betas(0.9, 0.99).into()),
        ("lion", Lion::new(1e-2).into()),
        ("lion wd", Lion::new(1e-2).with_weight_decay(0.5).with_betas(0.5, 0.9).into()),
        ("lion decoupled", Lion::new(1e-2).with_weight_decay(1e-3).with_decoupled_weight_decay(true).into()),
        ("adan", Adan::new(1e-2).into()),
        ("adan wd", Adan::new(1e-2).with_weight_decay(0.1).with_betas(0.9, 0.8, 0.95).into()),
        ("adan no_prox wd", Adan::new(1e-2).with_weight_decay(0.1).with_no_prox(true).into()),
        ("lamb", Lamb::new(1e-2).into()),
        ("lamb wd", Lamb::new(1e-2).with_weight_decay(0.1).with_betas(0.8, 0.99).into()),
        ("lamb no bias correction clip", Lamb::new(1e-2).with_bias_correction(false).with_trust_clip(true).into()),
        ("lars", Lars::new(1.0).into()),
        (
            "lars wd nesterov",
            Lars::new(0.5).with_weight_decay(0.01).with_nesterov(true).with_trust_coefficient(0.02).into(),
        ),
        ("lars excluded", Lars::new(0.1).with_trust_ratio(false).with_momentum(0.5).into()),
        // Flat tensors: Adafactor's vector case (tests/adafactor.rs covers matrices).
        ("adafactor", Adafactor::new(1e-2).into()),
        (
            "adafactor wd maximize d eps",
            Adafactor::new(0.5)
                .with_weight_decay(0.1)
                .with_maximize(true)
                .with_d(1.5)
                .with_eps(Some(1e-3), 1e-2)
                .into(),
        ),
    ]
}

/// Every optimizer that keeps its state in another format than f32 (`with_state_format`), in
/// `format`, at a variant that uses each of its state slots.
pub fn with_state_format(format: wgpu_optim::ElementFormat) -> Vec<(&'static str, Box<dyn Optimizer>)> {
    let mut all: Vec<(&'static str, Box<dyn Optimizer>)> = vec![
        ("adamw", AdamW::new(1e-2).with_state_format(format).into()),
        ("adam amsgrad l2", Adam::new(1e-2).with_amsgrad(true).with_weight_decay(0.1).with_state_format(format).into()),
        ("sgd nesterov", Sgd::new(0.1).with_momentum(0.9).with_nesterov(true).with_state_format(format).into()),
        ("lion", Lion::new(1e-3).with_weight_decay(0.1).with_state_format(format).into()),
        (
            "rmsprop centered momentum",
            RmsProp::new(1e-2).with_centered(true).with_momentum(0.9).with_state_format(format).into(),
        ),
        ("adagrad init", Adagrad::new(0.1).with_initial_accumulator_value(0.3).with_state_format(format).into()),
    ];
    for label in [
        "nadam decoupled maximize",
        "radam l2 maximize",
        // Not "adamax l2 maximize": its beta1 of 0.3 takes lerp's other branch, two roundings
        // where a device's `fma` is not fused, which the 8-bit test's first step excludes.
        "adamax",
        "adadelta rho l2 maximize",
        "adabelief amsgrad",
        "adan wd",
    ] {
        let o =
            variant(label).boxed_with_state_format(format).unwrap_or_else(|| panic!("{label} takes a state format"));
        all.push((label, o));
    }
    all
}

/// The configuration of `variants()` with this label.
pub fn variant(label: &str) -> Box<dyn Optimizer> {
    variants().into_iter().find(|(l, _)| *l == label).map(|(_, o)| o).unwrap_or_else(|| panic!("no variant {label}"))
}

/// Asserts `gpu` equals `cpu` to within `steps × budget × ε × (|x| + change)`, where
/// `change` is the largest per-step change of the tensor over the run: rounding errors
/// scale with the operands, and the operands of an update are the value and its change.
/// Errors made at one step are carried to the next at most once (every factor applied to
/// the previous value — beta, momentum, 1 - lr·wd — is at most 1), hence the factor `steps`.
pub fn assert_close(label: &str, gpu: &[f32], cpu: &[f32], change: f32, steps: usize, budget: f32) -> f32 {
    assert_eq!(gpu.len(), cpu.len(), "{label}: lengths differ");
    let mut worst = 0.0f32;
    for (i, (&a, &b)) in gpu.iter().zip(cpu).enumerate() {
        let scale = b.abs() + change;
        let tol = steps as f32 * budget * f32::EPSILON * scale;
        let err = (a - b).abs();
        assert!(
            err <= tol || (a.is_nan() && b.is_nan()),
            "{label}: element {i}: gpu {a:e} vs cpu {b:e}, |diff| {err:e} > tolerance {tol:e}"
        );
        if scale > 0.0 {
            worst = worst.max(err / (f32::EPSILON * scale));
        }
    }
    worst
}

/// Largest absolute element-wise difference between two arrays.
#[allow(dead_code)] // not every test binary uses it
pub fn max_change(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

/// One optimizer family's run used to compare two contexts: 3 steps one per submit on
/// gradients `grads(_, 1..=3)`, then `k` more in one submit; a shaped family on a 7 × 143
/// matrix, any other on `n` elements. Returns the parameters, every state tensor and the
/// steps the GPU took.
pub fn family_run(ctx: &GpuContext, o: &dyn Optimizer, n: usize, k: u32) -> (Vec<f32>, Vec<Vec<f32>>, u64) {
    let mut gpu = if o.kernel().is_shaped() {
        wgpu_optim::GpuOptimizer::with_shape(ctx, o.clone_box(), &params(7 * 143), &[7, 143]).unwrap()
    } else {
        wgpu_optim::GpuOptimizer::new(ctx, o.clone_box(), &params(n)).unwrap()
    };
    for step in 1..=3 {
        gpu.step(&grads(gpu.params().len(), step)).unwrap();
    }
    gpu.run(k).unwrap();
    let state = o.kernel().state.iter().filter_map(|s| gpu.read_state(s.torch_name).ok()).map(|a| a.to_vec()).collect();
    (gpu.read_params().unwrap().to_vec(), state, gpu.sync().unwrap())
}
