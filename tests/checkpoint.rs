//! Checkpoints: save → load → continue is bit-identical to never stopping, for every
//! optimizer variant on both sides; bad files are refused and change nothing.

mod common;
mod sealed;

use std::path::PathBuf;

use common::*;
use sealed::sealed;
use wgpu_optim::schedule::{CosineAnnealingLr, ExponentialLr, LinearLr, Schedule, SequentialLr};
use wgpu_optim::{
    Adafactor, Adam, AdamW, CpuOptimizer, Error, GpuContext, GpuOptimizer, GpuTensor, GradControl, NAdam, ParamGroup,
    ParamGroups, ScalerGrowth, Sgd,
};

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
    // The same file with its header's version changed to 9 (same length).
    let from = format!("\"version\":\"{}\"", wgpu_optim::checkpoint::VERSION).into_bytes();
    let to = b"\"version\":\"9\"";
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

/// Equal, or the first difference (tensors are long: no full dump).
fn same(a: &[Vec<f32>], b: &[Vec<f32>]) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let at = x.iter().zip(y).position(|(u, v)| u.to_bits() != v.to_bits());
        assert!(
            x.len() == y.len() && at.is_none(),
            "entry {i}: lengths {} {}, first difference at {at:?}: {:?} vs {:?}",
            x.len(),
            y.len(),
            at.map(|j| x[j]),
            at.map(|j| y[j])
        );
    }
}

fn warmup_cosine() -> Box<dyn Schedule> {
    SequentialLr::new(
        vec![LinearLr::new(0.1, 1.0, 3).unwrap().into(), CosineAnnealingLr::new(10, 1e-4).unwrap().into()],
        vec![3],
    )
    .unwrap()
    .into()
}

/// Two groups over three tensors (group 0 scheduled), clipping and a dynamic loss scale.
struct Run {
    p: Vec<GpuTensor>,
    g: Vec<GpuTensor>,
    groups: ParamGroups,
}

const LENS: [usize; 3] = [700, 1500, 333];

fn control() -> GradControl {
    GradControl {
        max_norm: Some(3.0),
        loss_scale: 256.0,
        scaler: Some(ScalerGrowth { growth_interval: 2, ..Default::default() }),
        ..Default::default()
    }
}

fn run_with(ctx: &GpuContext, start: &[Vec<f32>], wd: f64) -> Run {
    let p: Vec<GpuTensor> = start.iter().map(|x| GpuTensor::from_slice(ctx, x).unwrap()).collect();
    let g: Vec<GpuTensor> = LENS.iter().map(|&n| GpuTensor::zeros(ctx, n).unwrap()).collect();
    let mut groups = ParamGroups::new(
        ctx,
        vec![
            ParamGroup {
                optimizer: AdamW::new(1e-2).with_weight_decay(wd).into(),
                params: vec![&p[0], &p[1]],
                grads: vec![&g[0], &g[1]],
                shapes: Vec::new(),
                precision: Default::default(),
            },
            ParamGroup {
                optimizer: Sgd::new(0.05).with_momentum(0.9).into(),
                params: vec![&p[2]],
                grads: vec![&g[2]],
                shapes: Vec::new(),
                precision: Default::default(),
            },
        ],
    )
    .unwrap();
    groups.set_group_schedule(0, Some(warmup_cosine())).unwrap();
    groups.set_grad_control(Some(control())).unwrap();
    Run { p, g, groups }
}

impl Run {
    /// Step `k`: gradients scaled by the current loss scale; step 2 holds an infinity.
    fn step(&mut self, ctx: &GpuContext, k: usize) {
        let (scale, _) = self.groups.read_loss_scale().unwrap().unwrap();
        for (t, &n) in LENS.iter().enumerate() {
            let mut host: Vec<f32> = grads(n + t, k)[..n].iter().map(|x| x * scale).collect();
            if k == 2 && t == 1 {
                host[1000] = f32::INFINITY;
            }
            self.g[t].write(ctx, &host).unwrap();
        }
        self.groups.run(1).unwrap();
    }

    fn everything(&self, ctx: &GpuContext) -> Vec<Vec<f32>> {
        let mut all: Vec<Vec<f32>> = self.p.iter().map(|t| t.read(ctx).unwrap()).collect();
        for g in self.groups.groups() {
            all.extend(g.state().map(|(_, t)| t.read(ctx).unwrap()));
            all.push(vec![g.read_gpu_step().unwrap() as f32]);
        }
        let (scale, tracker) = self.groups.read_loss_scale().unwrap().unwrap();
        all.push(vec![scale, tracker as f32]);
        all
    }
}

#[test]
fn param_groups_with_schedule_and_loss_scaler_resume_bit_identically() {
    let ctx = ctx();
    let start: Vec<Vec<f32>> = LENS.iter().enumerate().map(|(t, &n)| params(n + t)[t..].to_vec()).collect();
    let mut straight = run_with(&ctx, &start, 0.1);
    for k in 1..=7 {
        straight.step(&ctx, k);
    }
    let mut first = run_with(&ctx, &start, 0.1);
    for k in 1..=4 {
        first.step(&ctx, k);
    }
    let path = scratch("groups");
    first.groups.save(&path).unwrap();
    let saved: Vec<Vec<f32>> = first.p.iter().map(|t| t.read(&ctx).unwrap()).collect();
    let at_save = first.everything(&ctx);
    drop(first);

    // The file is torch's layout: one tensor per parameter and state, groups in the header.
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = file.names();
    names.sort();
    assert_eq!(
        names,
        [
            "state.0.exp_avg",
            "state.0.exp_avg_sq",
            "state.0.step",
            "state.1.exp_avg",
            "state.1.exp_avg_sq",
            "state.1.step",
            "state.2.momentum_buffer"
        ]
    );
    // torch's per-parameter step: a 0-dimensional float32 tensor (SGD keeps none).
    assert_eq!(file.tensor("state.1.step").unwrap().shape(), [0usize; 0]);
    assert_eq!(file.tensor("state.1.exp_avg").unwrap().shape(), [LENS[1]]);
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    let groups: serde_json::Value = serde_json::from_str(&meta["param_groups"]).unwrap();
    assert_eq!(groups[0]["params"], serde_json::json!([0, 1]));
    assert_eq!(groups[1]["params"], serde_json::json!([2]));
    assert_eq!(groups[0]["step"], serde_json::json!(3), "4 recorded, 1 skipped");
    assert_eq!(groups[0]["schedule"]["start_step"], serde_json::json!(0));
    let scaler: serde_json::Value = serde_json::from_str(&meta["scaler"]).unwrap();
    // 256, infinity at step 2 → 128, then 2 finite steps → 256 with the tracker at 0.
    assert_eq!((scaler["scale"].as_f64(), scaler["_growth_tracker"].as_u64()), (Some(256.0), Some(0)));

    let mut resumed = run_with(&ctx, &saved, 0.1);
    resumed.groups.load(&path).unwrap();
    // The file counts the 3 steps taken, not the one skipped; the host now counts the same.
    assert_eq!(resumed.groups.groups()[0].step_count(), 3);
    same(&resumed.everything(&ctx), &at_save);
    for k in 5..=7 {
        resumed.step(&ctx, k);
    }
    same(&resumed.everything(&ctx), &straight.everything(&ctx));
    // Syncing the host's count to the GPU's changes nothing that follows.
    straight.groups.sync().unwrap();
    assert_eq!(straight.groups.groups()[0].step_count(), 6);
    for k in 8..=9 {
        straight.step(&ctx, k);
        resumed.step(&ctx, k);
    }
    same(&resumed.everything(&ctx), &straight.everything(&ctx));
    let lr = |r: &Run| r.groups.groups()[0].optimizer().lr();
    assert_eq!(lr(&resumed), lr(&straight));
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn group_checkpoints_that_do_not_fit_are_refused_and_change_nothing() {
    let ctx = ctx();
    let start: Vec<Vec<f32>> = LENS.iter().map(|&n| params(n)).collect();
    let mut run = run_with(&ctx, &start, 0.1);
    for k in 1..=3 {
        run.step(&ctx, k);
    }
    let path = scratch("groups refused");
    run.groups.save(&path).unwrap();
    let refuse = |label: &str, target: &mut Run| {
        let before = target.everything(&ctx);
        match target.groups.load(&path) {
            Err(Error::Checkpoint { message, .. }) => eprintln!("{label}: {message}"),
            other => panic!("{label}: expected a checkpoint error, got {other:?}"),
        }
        same(&target.everything(&ctx), &before);
    };
    refuse("other weight decay", &mut run_with(&ctx, &start, 0.2));
    let mut unscheduled = run_with(&ctx, &start, 0.1);
    unscheduled.groups.set_group_schedule(0, None).unwrap();
    refuse("no schedule", &mut unscheduled);
    let mut other_schedule = run_with(&ctx, &start, 0.1);
    other_schedule.groups.set_group_schedule(0, Some(ExponentialLr::new(0.9).unwrap().into())).unwrap();
    refuse("another schedule", &mut other_schedule);
    let mut other_growth = run_with(&ctx, &start, 0.1);
    other_growth
        .groups
        .set_grad_control(Some(GradControl { scaler: Some(ScalerGrowth::default()), ..control() }))
        .unwrap();
    refuse("another scaler growth", &mut other_growth);
    // A lone optimizer cannot take a two-group file.
    let mut lone = GpuOptimizer::new(&ctx, AdamW::new(1e-2).with_weight_decay(0.1), &params(LENS[0])).unwrap();
    assert!(matches!(lone.load(&path), Err(Error::Checkpoint { .. })));
    // The matching set-up loads it.
    run_with(&ctx, &start, 0.1).groups.load(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_schedule_resumes_where_it_stood() {
    let ctx = ctx();
    let n = 515;
    let make = |start: &[f32]| {
        let mut o = GpuOptimizer::new(&ctx, Adam::new(1e-2), start).unwrap();
        o.set_schedule(Some(warmup_cosine())).unwrap();
        o
    };
    let mut straight = make(&params(n));
    let mut first = make(&params(n));
    for k in 1..=8 {
        straight.step(&grads(n, k)).unwrap();
        if k <= 5 {
            first.step(&grads(n, k)).unwrap();
        }
    }
    let path = scratch("schedule");
    first.save(&path).unwrap();
    let mut resumed = make(&first.read_params().unwrap().to_vec());
    resumed.load(&path).unwrap();
    for k in 6..=8 {
        resumed.step(&grads(n, k)).unwrap();
    }
    assert_eq!(resumed.optimizer().lr(), straight.optimizer().lr());
    assert_eq!(resumed.read_params().unwrap(), straight.read_params().unwrap());
    // The CPU reads the GPU's file and continues the same schedule.
    let mut cpu = CpuOptimizer::new(Adam::new(1e-2), &first.read_params().unwrap()).unwrap();
    cpu.set_schedule(Some(warmup_cosine())).unwrap();
    cpu.load(&path).unwrap();
    for k in 6..=8 {
        cpu.step(&grads(n, k)).unwrap();
    }
    assert_eq!(cpu.optimizer().lr(), straight.optimizer().lr());
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn adafactor_save_load_continue_is_bit_identical() {
    let ctx = ctx();
    for shape in [vec![37usize, 29], vec![3, 5, 64], vec![1000]] {
        let n: usize = shape.iter().product();
        let config = Adafactor::new(1e-2);
        let path = scratch(&format!("adafactor {shape:?}"));
        let mut straight = GpuOptimizer::with_shape(&ctx, config.clone(), &params(n), &shape).unwrap();
        let mut first = GpuOptimizer::with_shape(&ctx, config.clone(), &params(n), &shape).unwrap();
        for k in 1..=6 {
            straight.step(&grads(n, k)).unwrap();
            if k <= 3 {
                first.step(&grads(n, k)).unwrap();
            }
        }
        first.save(&path).unwrap();
        let saved = first.read_params().unwrap();
        let mut resumed = GpuOptimizer::with_shape(&ctx, config.clone(), &saved, &shape).unwrap();
        resumed.load(&path).unwrap();
        assert_eq!(resumed.read_gpu_step().unwrap(), 3);
        let mut cpu_resumed = CpuOptimizer::with_shape(config.clone(), &saved, &shape).unwrap();
        cpu_resumed.load(&path).unwrap();
        let mut cpu_first = CpuOptimizer::with_shape(config.clone(), &params(n), &shape).unwrap();
        for k in 1..=3 {
            cpu_first.step(&grads(n, k)).unwrap();
        }
        for k in 4..=6 {
            resumed.step(&grads(n, k)).unwrap();
        }
        assert_eq!(resumed.read_params().unwrap(), straight.read_params().unwrap(), "{shape:?}");
        for name in ["row_var", "col_var", "variance"] {
            assert_eq!(resumed.read_state(name).ok(), straight.read_state(name).ok(), "{shape:?} {name}");
        }
        // The CPU's own checkpoint resumes the CPU bit for bit, too.
        let cpu_path = scratch(&format!("adafactor cpu {shape:?}"));
        cpu_first.save(&cpu_path).unwrap();
        let mut cpu_straight = cpu_first.clone();
        let mut cpu_again = CpuOptimizer::with_shape(config.clone(), cpu_first.params(), &shape).unwrap();
        cpu_again.load(&cpu_path).unwrap();
        for k in 4..=6 {
            cpu_straight.step(&grads(n, k)).unwrap();
            cpu_again.step(&grads(n, k)).unwrap();
            cpu_resumed.step(&grads(n, k)).unwrap();
        }
        assert_eq!(cpu_again.params(), cpu_straight.params(), "{shape:?}");
        assert_eq!(cpu_resumed.step_count(), 6);

        // Another shape with as many elements, or another configuration, is refused.
        let other: Vec<usize> = if shape.len() == 1 { vec![40, 25] } else { vec![n] };
        let mut wrong = GpuOptimizer::with_shape(&ctx, config.clone(), &params(n), &other).unwrap();
        assert!(matches!(wrong.load(&path), Err(Error::Checkpoint { .. })), "{shape:?}");
        assert_eq!(wrong.step_count(), 0);
        let mut wrong =
            CpuOptimizer::with_shape(Adafactor::new(1e-2).with_beta2_decay(-0.5), &params(n), &shape).unwrap();
        assert!(matches!(wrong.load(&path), Err(Error::Checkpoint { .. })));
        assert_eq!(wrong.step_count(), 0);
        // The learning rate is state, as for every optimizer (torch's load_state_dict): the
        // saved one is restored.
        let mut other_lr = CpuOptimizer::with_shape(Adafactor::new(2e-2), &params(n), &shape).unwrap();
        other_lr.load(&path).unwrap();
        assert_eq!((other_lr.optimizer().lr(), other_lr.step_count()), (1e-2, 3));
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_file(&cpu_path).unwrap();
    }
}

#[test]
fn the_header_holds_the_configuration_as_structured_data() {
    let path = scratch("structured");
    let cpu = CpuOptimizer::new(AdamW::new(1e-2).with_weight_decay(0.25).with_amsgrad(true), &params(64)).unwrap();
    cpu.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let header = meta.metadata().as_ref().unwrap();
    let groups: serde_json::Value = serde_json::from_str(&header["param_groups"]).unwrap();
    let config = &groups[0]["config"];
    assert_eq!(config["weight_decay"], 0.25);
    assert_eq!(config["amsgrad"], true);
    assert_eq!(config["betas"], serde_json::json!([0.9, 0.999]));
    assert_eq!(groups[0]["optimizer"], "AdamW");
}

#[test]
fn nadams_mu_product_is_kept_under_torchs_name_and_checked() {
    use safetensors::tensor::{Dtype, TensorView};
    let path = scratch("nadam");
    let mut cpu = CpuOptimizer::new(NAdam::new(1e-2), &params(40)).unwrap();
    for k in 1..=3 {
        cpu.step(&grads(40, k)).unwrap();
    }
    cpu.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let scalar = |name: &str| f32::from_le_bytes(file.tensor(name).unwrap().data().try_into().unwrap());
    assert_eq!(scalar("state.0.step"), 3.0);
    // torch's mu_product after three steps: the f32 product of mu_1 … mu_3 (psi 4e-3).
    let mu = |t: f64| 0.9 * (1.0 - 0.5 * 0.96f64.powf(t * 4e-3));
    let want = (1..=3).fold(1.0f32, |p, t| p * mu(f64::from(t)) as f32);
    assert_eq!(scalar("state.0.mu_product"), want);
    // A file whose mu_product disagrees with its step is refused.
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let wrong = (want * 1.5).to_le_bytes();
    let mut views: Vec<(String, TensorView<'_>)> = file
        .names()
        .into_iter()
        .map(|n| (n.to_string(), file.tensor(n).unwrap()))
        .filter(|(n, _)| n != "state.0.mu_product")
        .collect();
    views.push(("state.0.mu_product".into(), TensorView::new(Dtype::F32, vec![], &wrong).unwrap()));
    let tampered = sealed(views, meta.metadata().clone().unwrap());
    let bad = scratch("nadam-tampered");
    std::fs::write(&bad, tampered).unwrap();
    let mut other = CpuOptimizer::new(NAdam::new(1e-2), &params(40)).unwrap();
    match other.load(&bad) {
        Err(Error::Checkpoint { message, .. }) => assert!(message.contains("mu_product"), "{message}"),
        r => panic!("expected a refusal, got {r:?}"),
    }
    assert_eq!(other.step_count(), 0);
    other.load(&path).unwrap();
    assert_eq!(other.step_count(), 3);
}

#[test]
fn state_in_another_element_format_is_refused_naming_both() {
    use safetensors::tensor::{Dtype, TensorView};
    let path = scratch("format");
    let mut cpu = CpuOptimizer::new(Adam::new(1e-2), &params(8)).unwrap();
    cpu.step(&grads(8, 1)).unwrap();
    cpu.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    // exp_avg as 8 bf16 values (a format this crate has, not the one this configuration
    // keeps), or as 8 f64 values (one it does not read).
    let zeros = [0u8; 64];
    for (dtype, bytes, says) in
        [(Dtype::BF16, 16, ["exp_avg", "bf16", "f32"]), (Dtype::F64, 64, ["state.0.exp_avg", "F64", ""])]
    {
        let mut views: Vec<(String, TensorView<'_>)> = file
            .names()
            .into_iter()
            .map(|n| (n.to_string(), file.tensor(n).unwrap()))
            .filter(|(n, _)| n != "state.0.exp_avg")
            .collect();
        views.push(("state.0.exp_avg".into(), TensorView::new(dtype, vec![8], &zeros[..bytes]).unwrap()));
        let bad = scratch("format-other");
        std::fs::write(&bad, sealed(views, meta.metadata().clone().unwrap())).unwrap();
        let mut other = CpuOptimizer::new(Adam::new(1e-2), &params(8)).unwrap();
        match other.load(&bad) {
            Err(Error::Checkpoint { message, .. }) => {
                assert!(says.iter().all(|s| message.contains(s)), "{dtype:?}: {message}")
            }
            r => panic!("{dtype:?}: expected a refusal, got {r:?}"),
        }
        assert_eq!(other.step_count(), 0);
        assert!(other.state_tensor("exp_avg").unwrap().iter().all(|&x| x == 0.0));
    }
}
