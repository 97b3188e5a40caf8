//! Hostile use of the public API: each case a typed error, or correct behaviour, and a call
//! that fails changes nothing.

mod common;
mod sealed;

use common::*;
use sealed::sealed;
use wgpu_optim::{AdamW, CpuOptimizer, Error, GpuOptimizer, ParamGroups};

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn recording_zero_steps_records_nothing_even_with_update_tracking() {
    let ctx = ctx();
    let mut gpu = GpuOptimizer::new(&ctx, AdamW::new(1e-2), &params(100)).unwrap();
    gpu.track_updates(true).unwrap();
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    gpu.record(&mut encoder, 0).unwrap();
    ctx.queue().submit([encoder.finish()]);
    gpu.run(0).unwrap();
    assert_eq!((gpu.step_count(), gpu.read_gpu_step().unwrap()), (0, 0));
    assert_eq!(gpu.read_params().unwrap().to_vec(), params(100));
    let mut groups = ParamGroups::from_optimizers(vec![gpu]).unwrap();
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    groups.record(&mut encoder, 0).unwrap();
    ctx.queue().submit([encoder.finish()]);
    assert_eq!(groups.groups()[0].read_gpu_step().unwrap(), 0);
}

#[test]
fn more_steps_than_slots_in_one_submit_are_not_taken_with_wrong_scalars() {
    // Two records of 200 steps into one encoder: steps 257–400 overwrite the slots of 1–144.
    // Without gradient control too, no step runs with another's scalars: none is taken, and
    // sync says so once; then steps run again and match the CPU.
    let ctx = ctx();
    let n = 64;
    let mut gpu = GpuOptimizer::new(&ctx, AdamW::new(1e-2), &params(n)).unwrap();
    gpu.grads().write(&ctx, &grads(n, 1)).unwrap();
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    gpu.record(&mut encoder, 200).unwrap();
    gpu.record(&mut encoder, 200).unwrap();
    ctx.queue().submit([encoder.finish()]);
    assert!(matches!(gpu.sync(), Err(Error::StaleSteps { taken: 0 })));
    assert_eq!(bits(&gpu.read_params().unwrap().to_vec()), bits(&params(n)));
    assert_eq!(gpu.step_count(), 0);
    gpu.run(3).unwrap();
    let mut cpu = CpuOptimizer::new(AdamW::new(1e-2), &params(n)).unwrap();
    for _ in 0..3 {
        cpu.step(&grads(n, 1)).unwrap();
    }
    assert_eq!(gpu.sync().unwrap(), 3);
    let got = gpu.read_params().unwrap();
    assert_close("after the stale submit", got.as_slice().unwrap(), cpu.params().as_slice().unwrap(), 1e-2, 3, 12.0);
}

/// A schedule of the caller's whose learning rate turns NaN at 0-based step `bad`.
#[derive(Clone, Debug)]
struct BreaksAt {
    bad: u64,
}

impl wgpu_optim::schedule::Schedule for BreaksAt {
    fn lr(&self, base: f64, k: u64) -> f64 {
        if k >= self.bad { f64::NAN } else { base * 0.5 }
    }
    fn clone_box(&self) -> Box<dyn wgpu_optim::schedule::Schedule> {
        Box::new(self.clone())
    }
    fn config(&self) -> serde_json::Value {
        serde_json::json!({ "BreaksAt": { "bad": self.bad } })
    }
}

#[test]
fn a_learning_rate_a_schedule_yields_is_checked_before_any_kernel_reads_it() {
    let ctx = ctx();
    let n = 64;
    let mut gpu = GpuOptimizer::new(&ctx, AdamW::new(1e-2), &params(n)).unwrap();
    gpu.set_schedule(Some(Box::new(BreaksAt { bad: 3 }))).unwrap();
    gpu.grads().write(&ctx, &grads(n, 1)).unwrap();
    gpu.run(2).unwrap();
    let before = bits(&gpu.read_params().unwrap().to_vec());
    // Step 4 (the schedule's step 3) would read a NaN learning rate: the whole call for steps
    // 3–5 is refused, nothing changes —
    // not the parameters, not the step count, not the host's learning rate.
    match gpu.run(3) {
        Err(Error::InvalidHyperParameter { message, .. }) => assert!(message.contains("step 4"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    assert!(gpu.record(&mut encoder, 2).is_err());
    drop(encoder);
    assert_eq!(bits(&gpu.read_params().unwrap().to_vec()), before);
    assert_eq!((gpu.step_count(), gpu.read_gpu_step().unwrap()), (2, 2));
    assert_eq!(gpu.optimizer().lr(), 0.005);
    // The CPU refuses the same step the same way.
    let mut cpu = CpuOptimizer::new(AdamW::new(1e-2), &params(n)).unwrap();
    cpu.set_schedule(Some(Box::new(BreaksAt { bad: 2 }))).unwrap();
    cpu.step(&grads(n, 1)).unwrap();
    cpu.step(&grads(n, 1)).unwrap();
    let kept = cpu.params().clone();
    assert!(matches!(cpu.step(&grads(n, 1)), Err(Error::InvalidHyperParameter { .. })));
    assert_eq!((cpu.params(), cpu.step_count(), cpu.optimizer().lr()), (&kept, 2, 0.005));
}

#[test]
fn schedules_that_would_yield_invalid_learning_rates_are_refused_when_built() {
    use wgpu_optim::schedule::{
        CosineAnnealingLr, CosineAnnealingWarmRestarts, ExponentialLr, LinearLr, OneCycleLr, SequentialLr, StepLr,
    };
    assert!(CosineAnnealingWarmRestarts::new(0, 1, 0.0).is_err());
    assert!(CosineAnnealingWarmRestarts::new(10, 0, 0.0).is_err());
    assert!(ExponentialLr::new(f64::NAN).is_err());
    assert!(ExponentialLr::new(-0.5).is_err());
    assert!(CosineAnnealingLr::new(0, 0.0).is_err());
    assert!(LinearLr::new(-0.5, 1.0, 10).is_err());
    assert!(StepLr::with_gamma(5, f64::NAN).is_err());
    let two = || -> Vec<Box<dyn wgpu_optim::schedule::Schedule>> {
        vec![LinearLr::new(0.1, 1.0, 5).unwrap().into(), StepLr::new(3).unwrap().into(), StepLr::new(3).unwrap().into()]
    };
    match SequentialLr::new(two(), vec![10, 5]) {
        Err(Error::InvalidHyperParameter { message, .. }) => assert!(message.contains("[10, 5]"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(SequentialLr::new(two(), vec![5, 5]).is_err());
    // OneCycle over very few steps: every learning rate finite and positive.
    for total in 1..=4 {
        for pct in [0.0, 0.3, 1.0] {
            let s = OneCycleLr::with_phases(0.1, total, pct, 25.0, 1e4).unwrap();
            for k in 0..total + 2 {
                let lr = wgpu_optim::schedule::Schedule::lr(&s, 0.1, k);
                assert!(lr.is_finite() && lr > 0.0, "total {total} pct {pct} step {k}: {lr}");
            }
        }
    }
}

/// `path`'s checkpoint with its group's step, and every per-parameter `step`, set to `step`
/// and `mu_product` to `mu`.
fn with_step(path: &std::path::Path, step: u64, mu: f32) -> Vec<u8> {
    use safetensors::tensor::TensorView;
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = header.metadata().clone().unwrap();
    let mut groups: serde_json::Value = serde_json::from_str(&meta["param_groups"]).unwrap();
    groups[0]["step"] = serde_json::json!(step);
    meta.insert("param_groups".into(), groups.to_string());
    let (step_f, mu_b) = ((step as f32).to_le_bytes(), mu.to_le_bytes());
    let views: Vec<(String, TensorView<'_>)> = file
        .names()
        .into_iter()
        .map(|n| {
            let t = file.tensor(n).unwrap();
            let data: &[u8] = match n.rsplit('.').next() {
                Some("step") => &step_f,
                Some("mu_product") => &mu_b,
                _ => t.data(),
            };
            (n.to_string(), TensorView::new(t.dtype(), t.shape().to_vec(), data).unwrap())
        })
        .collect();
    sealed(views, meta)
}

#[test]
fn a_checkpoints_step_costs_nothing_that_grows_with_it() {
    use wgpu_optim::NAdam;
    let ctx = ctx();
    let dir = std::env::temp_dir();
    let path = dir.join(format!("wgpu-optim-hardening-nadam-{}.safetensors", std::process::id()));
    let mut cpu = CpuOptimizer::new(NAdam::new(1e-2), &params(32)).unwrap();
    for k in 1..=3 {
        cpu.step(&grads(32, k)).unwrap();
    }
    cpu.save(&path).unwrap();
    // Four billion steps: loading and the next step take one multiplication, not 4e9.
    let far = dir.join(format!("wgpu-optim-hardening-nadam-far-{}.safetensors", std::process::id()));
    std::fs::write(&far, with_step(&path, 4_000_000_000, 0.25)).unwrap();
    let mut cpu = CpuOptimizer::new(NAdam::new(1e-2), &params(32)).unwrap();
    cpu.load(&far).unwrap();
    cpu.step(&grads(32, 4)).unwrap();
    assert_eq!(cpu.step_count(), 4_000_000_001);
    assert!(cpu.params().iter().all(|x| x.is_finite()));
    let mut gpu = GpuOptimizer::new(&ctx, NAdam::new(1e-2), &params(32)).unwrap();
    gpu.load(&far).unwrap();
    gpu.step(&grads(32, 4)).unwrap();
    assert_eq!(gpu.sync().unwrap(), 4_000_000_001);
    // An implausible mu_product is refused; so is a step past the GPU's u32 counter.
    std::fs::write(&far, with_step(&path, 4_000_000_000, 1.5)).unwrap();
    assert!(matches!(
        CpuOptimizer::new(NAdam::new(1e-2), &params(32)).unwrap().load(&far),
        Err(Error::Checkpoint { .. })
    ));
    std::fs::write(&far, with_step(&path, 1 << 33, 0.25)).unwrap();
    let mut gpu = GpuOptimizer::new(&ctx, NAdam::new(1e-2), &params(32)).unwrap();
    match gpu.load(&far) {
        Err(Error::Checkpoint { message, .. }) => assert!(message.contains("u32"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // At the counter's end, the next steps are refused, not wrapped.
    std::fs::write(&far, with_step(&path, u64::from(u32::MAX), 0.25)).unwrap();
    gpu.load(&far).unwrap();
    assert!(matches!(gpu.run(1), Err(Error::OverLimit(_))));
    for p in [path, far] {
        std::fs::remove_file(p).unwrap();
    }
}

#[test]
fn every_bit_flip_in_a_checkpoint_is_refused_and_changes_nothing() {
    use wgpu_optim::Sgd;
    let path = std::env::temp_dir().join(format!("wgpu-optim-hardening-flip-{}.safetensors", std::process::id()));
    let o = Sgd::new(0.1).with_momentum(0.9);
    let mut cpu = CpuOptimizer::new(o.clone(), &params(4)).unwrap();
    cpu.step(&grads(4, 1)).unwrap();
    cpu.save(&path).unwrap();
    let good = std::fs::read(&path).unwrap();
    let mut target = CpuOptimizer::new(o, &params(4)).unwrap();
    for k in 1..=2 {
        target.step(&grads(4, k)).unwrap();
    }
    let before = (target.step_count(), target.state_tensor("momentum_buffer").unwrap().clone());
    let damaged = path.with_extension("damaged");
    for bit in 0..good.len() * 8 {
        let mut bytes = good.clone();
        bytes[bit / 8] ^= 1 << (bit % 8);
        std::fs::write(&damaged, &bytes).unwrap();
        match target.load(&damaged) {
            Err(Error::Checkpoint { .. }) => {}
            other => panic!("bit {bit} of {}: expected a refusal, got {other:?}", good.len() * 8),
        }
    }
    assert_eq!((target.step_count(), target.state_tensor("momentum_buffer").unwrap().clone()), before);
    // The undamaged file still loads.
    target.load(&path).unwrap();
    assert_eq!(target.step_count(), 1);
    for p in [path, damaged] {
        std::fs::remove_file(p).unwrap();
    }
}

#[test]
fn checkpoint_names_are_parsed_strictly() {
    use safetensors::tensor::TensorView;
    let path = std::env::temp_dir().join(format!("wgpu-optim-hardening-names-{}.safetensors", std::process::id()));
    let mut cpu = CpuOptimizer::new(AdamW::new(1e-2), &params(8)).unwrap();
    cpu.step(&grads(8, 1)).unwrap();
    cpu.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    let views = || -> Vec<(String, TensorView<'_>)> {
        file.names().into_iter().map(|n| (n.to_string(), file.tensor(n).unwrap())).collect()
    };
    let refused = |data: Vec<u8>, says: &str| {
        std::fs::write(&path, data).unwrap();
        let mut fresh = CpuOptimizer::new(AdamW::new(1e-2), &params(8)).unwrap();
        match fresh.load(&path) {
            Err(Error::Checkpoint { message, .. }) => assert!(message.contains(says), "{says}: {message}"),
            other => panic!("{says}: expected a refusal, got {other:?}"),
        }
        assert_eq!(fresh.step_count(), 0);
    };
    // A second spelling of a parameter's index, an unknown tensor, an unknown header entry.
    let mut twice = views();
    twice.push(("state.00.exp_avg".into(), file.tensor("state.0.exp_avg").unwrap()));
    refused(sealed(twice, meta.clone()), "state.00.exp_avg");
    let mut unknown = views();
    unknown.push(("state.0.extra".into(), file.tensor("state.0.exp_avg").unwrap()));
    refused(sealed(unknown, meta.clone()), "extra");
    let mut more = meta.clone();
    more.insert("note".into(), "hello".into());
    refused(sealed(views(), more), "note");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_parameter_bound_twice_or_over_a_gradient_is_refused() {
    use wgpu_optim::{GpuTensor, ParamGroup};
    let ctx = ctx();
    let (a, b) = (GpuTensor::from_slice(&ctx, &params(64)).unwrap(), GpuTensor::from_slice(&ctx, &params(64)).unwrap());
    let (ga, gb) = (GpuTensor::zeros(&ctx, 64).unwrap(), GpuTensor::zeros(&ctx, 64).unwrap());
    let aliased = |r: wgpu_optim::Result<ParamGroups>, says: &str| match r {
        Err(e @ Error::Aliased { .. }) => assert!(e.to_string().contains(says), "{says}: {e}"),
        Err(e) => panic!("{says}: expected Aliased, got {e}"),
        Ok(_) => panic!("{says}: expected Aliased, got Ok"),
    };
    // The same tensor twice in one group, and in two groups.
    aliased(
        ParamGroups::new(&ctx, vec![ParamGroup::new(AdamW::new(1e-2), vec![&a, &a], vec![&ga, &gb])]),
        "group 0 tensor 0 and group 0 tensor 1",
    );
    aliased(
        ParamGroups::new(
            &ctx,
            vec![
                ParamGroup::new(AdamW::new(1e-2), vec![&a], vec![&ga]),
                ParamGroup::new(AdamW::new(1e-2), vec![&a], vec![&gb]),
            ],
        ),
        "group 1 tensor 0",
    );
    // A parameter that is its own gradient, and views of one buffer that overlap.
    aliased(ParamGroups::new(&ctx, vec![ParamGroup::new(AdamW::new(1e-2), vec![&a], vec![&a])]), "gradient");
    let align = u64::from(ctx.limits().min_storage_buffer_offset_alignment).max(16);
    let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 4 * align,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let n = (2 * align / 4) as usize;
    let p = GpuTensor::from_buffer(&ctx, &buffer, 0, n).unwrap();
    let g = GpuTensor::from_buffer(&ctx, &buffer, align, n).unwrap();
    match GpuOptimizer::from_tensors(&ctx, AdamW::new(1e-2), p.clone(), g) {
        Err(Error::Aliased { start, end, .. }) => assert_eq!((start, end), (align, 2 * align)),
        other => panic!("expected Aliased, got {other:?}"),
    }
    // Gradients may share memory (both only read), and disjoint views of one buffer are fine.
    ParamGroups::new(
        &ctx,
        vec![
            ParamGroup::new(AdamW::new(1e-2), vec![&a], vec![&ga]),
            ParamGroup::new(AdamW::new(1e-2), vec![&b], vec![&ga]),
        ],
    )
    .unwrap();
    let g = GpuTensor::from_buffer(&ctx, &buffer, 2 * align, n).unwrap();
    GpuOptimizer::from_tensors(&ctx, AdamW::new(1e-2), p, g).unwrap();
    // Adding a group whose tensor another group updates is refused and changes nothing.
    let mut groups = ParamGroups::new(&ctx, vec![ParamGroup::new(AdamW::new(1e-2), vec![&a], vec![&ga])]).unwrap();
    assert!(matches!(
        groups.add_param_group(ParamGroup::new(AdamW::new(1e-2), vec![&a], vec![&gb])),
        Err(Error::Aliased { .. })
    ));
    assert_eq!(groups.groups().len(), 1);
}

#[test]
fn every_dispatch_covers_its_range_under_any_tuning_that_validates() {
    use wgpu_optim::{Adafactor, GradControl};
    let align = u64::from(ctx().limits().min_storage_buffer_offset_alignment).max(16);
    let seg = 1024u64.next_multiple_of(align);
    let elements = (seg / 4) as u32;
    // A grid too small for a sub-range is refused when the tuning is.
    let too_small = ctx().with_tuning(wgpu_optim::Tuning {
        max_workgroups_per_dimension: 2,
        segment_bytes: seg,
        buffer_bytes: 64 * seg,
        ..*ctx().tuning()
    });
    match too_small {
        Err(Error::InvalidTuning(m)) => assert!(m.contains("max_workgroups_per_dimension 2"), "{m}"),
        other => panic!("expected InvalidTuning, got {other:?}"),
    }
    // The smallest that validates: one element per workgroup at most, everything covered.
    let side = elements.isqrt() + u32::from(elements.isqrt() * elements.isqrt() < elements);
    let ctx = ctx_with(|t| {
        t.max_workgroups_per_dimension = side;
        t.segment_bytes = seg;
        t.buffer_bytes = 64 * seg;
    });
    let n = 16384;
    let control = GradControl { max_norm: Some(1.0), ..Default::default() };
    let mut gpu =
        ParamGroups::from_optimizers(vec![GpuOptimizer::new(&ctx, AdamW::new(1e-2), &params(n)).unwrap()]).unwrap();
    gpu.set_grad_control(Some(control)).unwrap();
    let mut cpu = CpuOptimizer::new(AdamW::new(1e-2), &params(n)).unwrap();
    cpu.set_grad_control(Some(control)).unwrap();
    let g: Vec<f32> = grads(n, 1).iter().map(|x| x * 10.0).collect();
    gpu.groups()[0].grads().write(&ctx, &g).unwrap();
    gpu.run(1).unwrap();
    cpu.step(&g).unwrap();
    let (on_gpu, on_cpu) = (gpu.read_grad_control().unwrap().unwrap(), cpu.last_grad_control().unwrap());
    assert!((on_gpu[3] - on_cpu[3]).abs() <= 1e-5 * on_cpu[3], "norm: gpu {on_gpu:?} cpu {on_cpu:?}");
    // A NaN far into the tensor is found.
    let mut bad = g.clone();
    bad[10_000] = f32::NAN;
    gpu.groups()[0].grads().write(&ctx, &bad).unwrap();
    gpu.run(1).unwrap();
    assert_eq!(gpu.read_grad_control().unwrap().unwrap()[2], 1.0);
    // Adafactor's reductions over many sub-ranges of whole matrices.
    let shape = [64, 16, 16];
    let mut a = GpuOptimizer::with_shape(&ctx, Adafactor::new(1e-2), &params(n), &shape).unwrap();
    let mut c = CpuOptimizer::with_shape(Adafactor::new(1e-2), &params(n), &shape).unwrap();
    a.step(&grads(n, 1)).unwrap();
    c.step(&grads(n, 1)).unwrap();
    let got = a.read_params().unwrap();
    assert_close("adafactor", got.as_slice().unwrap(), c.params().as_slice().unwrap(), 1e-2, 1, 36.0);
}

#[test]
fn sizes_beyond_the_device_or_the_host_are_errors_before_anything_is_allocated() {
    use wgpu_optim::GpuTensor;
    let ctx = ctx();
    // Element counts whose bytes overflow, or whose bookkeeping alone would not fit.
    for len in [usize::MAX, usize::MAX / 4, 1 << 61] {
        match GpuTensor::zeros(&ctx, len) {
            Err(Error::OverLimit(m)) => assert!(m.contains(&len.to_string()), "{m}"),
            other => panic!("{len}: expected OverLimit, got {other:?}"),
        }
        assert!(matches!(GpuTensor::filled(&ctx, len, 1.0), Err(Error::OverLimit(_))));
    }
    // 4 TiB on a device whose buffers are host memory: refused, not an abort in the driver.
    if ctx.adapter_info().device_type == wgpu::DeviceType::Cpu {
        match GpuTensor::zeros(&ctx, 1 << 40) {
            Err(e @ Error::OutOfMemory { .. }) => assert!(e.to_string().contains("host memory"), "{e}"),
            other => panic!("expected OutOfMemory, got {other:?}"),
        }
    }
    // An Adafactor shape whose product overflows.
    assert!(matches!(
        GpuOptimizer::with_shape(&ctx, wgpu_optim::Adafactor::default(), &params(4), &[usize::MAX, 2, 2]),
        Err(Error::OverLimit(_))
    ));
}

#[test]
fn messages_name_what_failed() {
    use wgpu_optim::{GpuTensor, ParamGroup};
    let ctx = ctx();
    let storage = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 1024,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let t = GpuTensor::from_buffer(&ctx, &storage, 0, 256).unwrap();
    let read = t.read(&ctx).unwrap_err().to_string();
    assert!(read.contains("lacks usage COPY_SRC") && !read.contains("BufferUsages("), "{read}");
    // Gradients the host cannot write: named, not wgpu's text.
    let p = GpuTensor::from_slice(&ctx, &params(256)).unwrap();
    let mut gpu = GpuOptimizer::from_tensors(&ctx, AdamW::new(1e-2), p, t).unwrap();
    match gpu.step(&grads(256, 1)) {
        Err(e @ Error::MissingUsage { .. }) => assert!(e.to_string().contains("COPY_DST"), "{e}"),
        other => panic!("expected MissingUsage, got {other:?}"),
    }
    let a = GpuTensor::from_slice(&ctx, &params(8)).unwrap();
    let ga = GpuTensor::zeros(&ctx, 8).unwrap();
    let mut groups = ParamGroups::new(&ctx, vec![ParamGroup::new(AdamW::new(1e-2), vec![&a], vec![&ga])]).unwrap();
    match groups.reconfigure(5, AdamW::new(1e-3)) {
        Err(e @ Error::NoSuchGroup { index: 5, groups: 1 }) => assert!(e.to_string().contains("group 5"), "{e}"),
        other => panic!("expected NoSuchGroup, got {other:?}"),
    }
    assert!(matches!(groups.set_group_schedule(2, None), Err(Error::NoSuchGroup { index: 2, .. })));
    match ParamGroups::new(&ctx, vec![ParamGroup::new(AdamW::new(1e-2), vec![], vec![])]) {
        Err(e @ Error::Empty { .. }) => assert!(e.to_string().contains("param group"), "{e}"),
        Err(e) => panic!("expected Empty, got {e}"),
        Ok(_) => panic!("expected Empty, got Ok"),
    }
}

#[test]
fn no_adapter_advice_fits_the_backends_asked_for() {
    use wgpu_optim::{AdapterRequest, GpuContext};
    // A backend this machine lacks (Metal off Apple; Vulkan where there is Metal): no advice
    // to install the other one's driver.
    let missing = if cfg!(target_vendor = "apple") { wgpu::Backends::VULKAN } else { wgpu::Backends::METAL };
    let err = GpuContext::with_request(&AdapterRequest { backends: missing, name: None, tuning: None }).unwrap_err();
    assert!(matches!(err, Error::NoAdapter { .. }), "{err}");
    let text = err.to_string();
    if missing == wgpu::Backends::METAL {
        assert!(!text.contains("mesa-vulkan-drivers") && text.contains("WGPU_BACKEND"), "{text}");
    }
}

/// A device of this machine's adapter, created with `limits` (lower than the adapter's).
fn device_with(limits: wgpu::Limits) -> (wgpu::Device, wgpu::Queue, wgpu::AdapterInfo) {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::PRIMARY,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).expect(
        "no GPU adapter: install a Vulkan driver (Debian/Ubuntu: apt-get install mesa-vulkan-drivers libvulkan1)",
    );
    let info = adapter.get_info();
    let (device, queue) = pollster::block_on(
        adapter.request_device(&wgpu::DeviceDescriptor { required_limits: limits, ..Default::default() }),
    )
    .unwrap();
    (device, queue, info)
}

#[test]
fn a_device_with_low_limits_gets_errors_naming_the_limit() {
    use wgpu_optim::GpuContext;
    // Four storage buffers per stage (the step table and counter, p and g): every optimizer
    // here keeps state, so each is refused with an error naming the limit — no panic in wgpu's
    // error handler while the engine's layouts are made — and tensors still work.
    let (device, queue, info) = device_with(wgpu::Limits::downlevel_defaults());
    let ctx = GpuContext::from_device(device, queue, info).unwrap();
    let t = wgpu_optim::GpuTensor::from_slice(&ctx, &params(100)).unwrap();
    assert_eq!(t.read(&ctx).unwrap(), params(100));
    for (name, make) in wgpu_optim::optim::ALL {
        match GpuOptimizer::new(&ctx, make(), &params(100)) {
            Err(Error::OverLimit(m)) => assert!(m.contains("max_storage_buffers_per_shader_stage"), "{name}: {m}"),
            other => panic!("{name}: expected OverLimit, got {other:?}"),
        }
    }
    // No compute shaders at all (WebGL2's limits): refused when the context is made.
    let (device, queue, info) = device_with(wgpu::Limits::downlevel_webgl2_defaults());
    match GpuContext::from_device(device, queue, info) {
        Err(Error::OverLimit(m)) => assert!(m.contains("max_compute") && m.contains("WebGL2"), "{m}"),
        other => panic!("expected OverLimit, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn with_webgpus_default_limits_every_family_steps_as_with_the_adapters() {
    use wgpu_optim::{GpuContext, Optimizer};
    // Eight storage buffers per stage (WebGPU's and Metal's default): a family with four
    // state tensors has no room for the next step counter in its last dispatch and advances
    // the counter in a dispatch of its own; every family's results are bit for bit those of
    // the adapter's own limits, where every element-wise step's last dispatch advances it.
    let (device, queue, info) = device_with(wgpu::Limits::default());
    let webgpu = GpuContext::from_device(device, queue, info).unwrap();
    let full = ctx();
    let n = 1001; // the last dispatch is the tail's
    for (name, make) in wgpu_optim::optim::ALL {
        let o: Box<dyn Optimizer> = make();
        let run = |ctx: &GpuContext| {
            let (params, _, steps) = family_run(ctx, &*o, n, 2);
            (params, steps)
        };
        let ((a, steps_a), (b, steps_b)) = (run(&webgpu), run(&full));
        assert_eq!((steps_a, steps_b), (5, 5), "{name}: steps taken");
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "{name}: bit for bit");
        assert_ne!(a, params(a.len()), "{name}: the steps moved the parameters");
    }
}

#[test]
fn every_call_after_the_device_is_lost_says_so() {
    use wgpu_optim::GpuContext;
    // A context of its own: the device is destroyed.
    let ctx = GpuContext::new().unwrap();
    let mut gpu = GpuOptimizer::new(&ctx, AdamW::new(1e-2), &params(100)).unwrap();
    gpu.step(&grads(100, 1)).unwrap();
    ctx.device().destroy();
    let lost = |r: wgpu_optim::Result<()>, what: &str| match r {
        Err(e @ Error::DeviceLost { .. }) => assert!(e.to_string().contains("Destroyed"), "{what}: {e}"),
        other => panic!("{what}: expected DeviceLost, got {other:?}"),
    };
    // wgpu reports the loss once the work in flight is waited for (a read, sync, save, health
    // check or wait); from then on every call says so.
    lost(ctx.wait(), "wait");
    lost(gpu.step(&grads(100, 1)), "step");
    lost(gpu.run(2), "run");
    lost(gpu.read_params().map(|_| ()), "read");
    lost(gpu.sync().map(|_| ()), "sync");
    lost(GpuOptimizer::new(&ctx, AdamW::new(1e-2), &params(100)).map(|_| ()), "new");
    // A device the caller made keeps the caller's callback; the caller reports the loss.
    let (device, queue, info) = device_with(wgpu::Limits::default());
    let theirs = GpuContext::from_device(device, queue, info).unwrap();
    let mut gpu = GpuOptimizer::new(&theirs, AdamW::new(1e-2), &params(100)).unwrap();
    theirs.mark_lost("Destroyed by the caller");
    lost(gpu.step(&grads(100, 1)), "step on the caller's device");
}

#[test]
fn tensors_of_another_device_are_refused_wherever_they_are_bound() {
    use wgpu_optim::{GpuContext, GpuTensor, ParamGroup};
    // Two contexts of this crate: one process-wide instance, two devices.
    let (a, b) = (GpuContext::new().unwrap(), GpuContext::new().unwrap());
    let (p, g) = (GpuTensor::from_slice(&a, &params(64)).unwrap(), GpuTensor::zeros(&a, 64).unwrap());
    match GpuOptimizer::from_tensors(&b, AdamW::new(1e-2), p.clone(), g.clone()) {
        Err(Error::ForeignDevice { .. }) => {}
        other => panic!("expected ForeignDevice, got {other:?}"),
    }
    match ParamGroups::new(&b, vec![ParamGroup::new(AdamW::new(1e-2), vec![&p], vec![&g])]) {
        Err(Error::ForeignDevice { .. }) => {}
        Err(e) => panic!("expected ForeignDevice, got {e}"),
        Ok(_) => panic!("expected ForeignDevice, got Ok"),
    }
    // On their own device they are fine.
    GpuOptimizer::from_tensors(&a, AdamW::new(1e-2), p, g).unwrap();
}
