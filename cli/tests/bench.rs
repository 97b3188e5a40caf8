//! The benchmark's guard: a GPU result that disagrees with the CPU is refused, not timed.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::*;
use wgpu_optim::{AdamW, Optimizer};
use wgpu_optim_cli::Error;
use wgpu_optim_cli::bench::{MODES, Mode, Storage, TensorSet, Workload};

#[test]
fn the_benchmark_refuses_to_time_a_wrong_result() {
    let ctx = ctx();
    let w = Workload::new(AdamW::default().into(), TensorSet::model("gpt2-mini").unwrap());
    for storage in [Storage::Arena, Storage::Buffers] {
        let mut good = w.gpu(&ctx, storage).unwrap();
        let worst = w.check(&ctx, &mut good, 2).unwrap();
        assert!(worst <= 2.0 * f64::from(AdamW::default().kernel().step_error_budget));
        // One element of one tensor off by a few hundred ulp: refused, naming it.
        let mut bad = w.gpu(&ctx, storage).unwrap();
        let tensor = &bad.params()[77];
        let mut p = tensor.read(&ctx).unwrap();
        p[5] *= 1.0 + 300.0 * f32::EPSILON;
        tensor.write(&ctx, &p).unwrap();
        match w.check(&ctx, &mut bad, 2) {
            Err(Error::ResultMismatch(message)) => assert!(message.contains("tensor 77 params[5]"), "{message}"),
            other => panic!("{storage:?}: expected a refusal, got {other:?}"),
        }
    }
}

#[test]
fn every_mode_is_checked_and_sized_by_its_formats() {
    let ctx = ctx();
    let adamw: Box<dyn Optimizer> = AdamW::default().into();
    for mode in MODES {
        let w = Workload::in_mode(&*adamw, TensorSet::model("gpt2-mini").unwrap(), mode).unwrap();
        for storage in [Storage::Arena, Storage::Buffers] {
            let mut gpu = w.gpu(&ctx, storage).unwrap();
            w.check(&ctx, &mut gpu, 2).unwrap_or_else(|e| panic!("{} {storage:?}: {e}", mode.name));
            // 16-bit tensors on the GPU: the parameters in the mode's format.
            assert_eq!(gpu.params()[0].format(), mode.params, "{}", mode.name);
        }
    }
    // Bytes per parameter, from the formats: AdamW moves p, g, m, v (and the master weights).
    let sizes: Vec<(f64, f64)> =
        MODES.iter().map(|m| (m.gpu_bytes_per_param(&*adamw), m.gpu_memory_per_param(&*adamw))).collect();
    let by = |name: &str| sizes[MODES.iter().position(|m| m.name == name).unwrap()];
    assert_eq!(by("f32"), (28.0, 16.0));
    assert_eq!(by("bf16"), (22.0, 12.0));
    assert_eq!(by("bf16-master"), (30.0, 16.0));
    assert_eq!(by("bf16-moments"), (20.0, 12.0));
    assert_eq!(by("bf16-sr-bf16-moments"), (14.0, 8.0));
    // 8-bit moments: a byte per element and an f32 absmax per 256 (65 words per block).
    assert_eq!(by("bf16-sr-8bit"), (6.0 + 4.0 * 260.0 / 256.0, 4.0 + 2.0 * 260.0 / 256.0));
    assert_eq!(by("f32-8bit"), (12.0 + 4.0 * 260.0 / 256.0, 8.0 + 2.0 * 260.0 / 256.0));
    // Tensors under 4096 elements keep f32 state.
    let q8 = Mode::by_name("f32-8bit").unwrap();
    assert_eq!(q8.gpu_bytes(&*adamw, &[4095]), MODES[0].gpu_bytes(&*adamw, &[4095]));
    // An optimizer whose state is f32 only has no 16-bit-state mode.
    let lamb: Box<dyn Optimizer> = wgpu_optim::Lamb::default().into();
    let moments = Mode::by_name("bf16-moments").unwrap();
    assert!(matches!(Workload::in_mode(&*lamb, TensorSet::one(64), moments), Err(Error::BenchArgument(_))));
    // Every element-wise optimizer has one.
    let nadam: Box<dyn Optimizer> = wgpu_optim::NAdam::default().into();
    assert!(Workload::in_mode(&*nadam, TensorSet::one(64), moments).is_ok());
}
