//! Checkpoints: save → load → continue is bit-identical to never stopping, for every
//! optimizer variant on both sides; bad files are refused and change nothing.

mod common;

use std::path::PathBuf;

use common::*;
use wgpu_optim::{Adam, CpuOptimizer, Error, GpuOptimizer, Sgd};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgpu-optim-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{}.safetensors", name.replace(' ', "_")))
}

#[test]
fn save_load_continue_is_bit_identical_for_every_variant() {
    let ctx = ctx();
    let n = 1031;
    for (label, opt) in variants() {
        let path = scratch(label);
        // Never stopping: 6 steps.
        let mut straight = GpuOptimizer::new(&ctx, opt.clone_box(), &params(n)).unwrap();
        for k in 1..=6 {
            straight.step(&grads(n, k)).unwrap();
        }
        // Stopping after 3: save, then a new optimizer from the saved parameters.
        let mut first = GpuOptimizer::new(&ctx, opt.clone_box(), &params(n)).unwrap();
        for k in 1..=3 {
            first.step(&grads(n, k)).unwrap();
        }
        first.save(&path).unwrap();
        let saved_params = first.read_params().unwrap();
        drop(first);
        let mut resumed = GpuOptimizer::new(&ctx, opt.clone_box(), &saved_params).unwrap();
        resumed.load(&path).unwrap();
        assert_eq!(resumed.step_count(), 3);
        assert_eq!(resumed.read_gpu_step().unwrap(), 3, "{label}");
        for k in 4..=6 {
            resumed.step(&grads(n, k)).unwrap();
        }
        assert_eq!(straight.read_params().unwrap(), resumed.read_params().unwrap(), "{label}");
        for (slot, _) in straight.state() {
            assert_eq!(straight.read_state(slot.torch_name).unwrap(), resumed.read_state(slot.torch_name).unwrap());
        }

        // The CPU reads the same file and continues the same way.
        let mut cpu_straight = CpuOptimizer::new(opt.clone_box(), &params(n)).unwrap();
        for k in 1..=6 {
            cpu_straight.step(&grads(n, k)).unwrap();
        }
        let mut cpu_first = CpuOptimizer::new(opt.clone_box(), &params(n)).unwrap();
        for k in 1..=3 {
            cpu_first.step(&grads(n, k)).unwrap();
        }
        cpu_first.save(&path).unwrap();
        let mut cpu_resumed = CpuOptimizer::new(opt.clone_box(), cpu_first.params()).unwrap();
        cpu_resumed.load(&path).unwrap();
        for k in 4..=6 {
            cpu_resumed.step(&grads(n, k)).unwrap();
        }
        assert_eq!(cpu_straight.params(), cpu_resumed.params(), "{label}");
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn bad_checkpoints_are_refused_and_change_nothing() {
    let ctx = ctx();
    let n = 300;
    let mut gpu = GpuOptimizer::new(&ctx, Adam::new(1e-2), &params(n)).unwrap();
    for k in 1..=2 {
        gpu.step(&grads(n, k)).unwrap();
    }
    let good = scratch("good");
    gpu.save(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let before = (gpu.read_state("exp_avg").unwrap(), gpu.step_count(), gpu.read_gpu_step().unwrap());

    let mut refuse = |name: &str, contents: &[u8]| {
        let path = scratch(name);
        std::fs::write(&path, contents).unwrap();
        match gpu.load(&path) {
            Err(Error::Checkpoint { message, .. }) => eprintln!("{name}: {message}"),
            other => panic!("{name}: expected a checkpoint error, got {other:?}"),
        }
        assert_eq!((gpu.read_state("exp_avg").unwrap(), gpu.step_count(), gpu.read_gpu_step().unwrap()), before);
    };
    refuse("truncated", &bytes[..bytes.len() - 17]);
    refuse("corrupt", b"\x08\x00\x00\x00\x00\x00\x00\x00not json");
    refuse("empty", b"");

    // Another optimizer's checkpoint, another size, another version.
    let other = scratch("another optimizer");
    let mut sgd = CpuOptimizer::new(Sgd::new(0.1).with_momentum(0.9), &params(n)).unwrap();
    sgd.step(&grads(n, 1)).unwrap();
    sgd.save(&other).unwrap();
    refuse("wrong optimizer", &std::fs::read(&other).unwrap());
    let mut small = CpuOptimizer::new(Adam::new(1e-2), &params(n - 1)).unwrap();
    small.step(&grads(n - 1, 1)).unwrap();
    small.save(&other).unwrap();
    refuse("wrong shape", &std::fs::read(&other).unwrap());
    let amsgrad = CpuOptimizer::new(Adam::new(1e-2).with_amsgrad(true), &params(n)).unwrap();
    amsgrad.save(&other).unwrap();
    refuse("other state", &std::fs::read(&other).unwrap());
    // The same file with its header's version changed from 1 to 9 (same length).
    let (from, to) = (b"\"version\":\"1\"", b"\"version\":\"9\"");
    let at = bytes.windows(from.len()).position(|w| w == from).expect("the header spells the version so");
    let mut newer = bytes.clone();
    newer[at..at + to.len()].copy_from_slice(to);
    refuse("wrong version", &newer);

    // The good file still loads.
    gpu.load(&good).unwrap();
}

#[test]
fn saving_replaces_the_previous_checkpoint_whole() {
    // A directory of its own: the other tests save beside each other in parallel.
    let dir = scratch("replace").with_extension("dir");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("replace.safetensors");
    let mut cpu = CpuOptimizer::new(Adam::new(1e-2), &params(64)).unwrap();
    cpu.step(&grads(64, 1)).unwrap();
    cpu.save(&path).unwrap();
    cpu.step(&grads(64, 2)).unwrap();
    cpu.save(&path).unwrap();
    let mut fresh = CpuOptimizer::new(Adam::new(1e-2), &params(64)).unwrap();
    fresh.load(&path).unwrap();
    assert_eq!(fresh.step_count(), 2);
    assert_eq!(fresh.state_tensor("exp_avg"), cpu.state_tensor("exp_avg"));
    // Written through a temporary file and a rename: nothing else is left beside it.
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A save that cannot be written is an error, not a panic, and leaves no file.
    let nowhere = dir.join("missing-dir").join("x.safetensors");
    assert!(matches!(cpu.save(&nowhere), Err(Error::Checkpoint { .. })));
}
