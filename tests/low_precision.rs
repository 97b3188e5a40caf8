//! bf16 and f16 parameters and gradients: f32 arithmetic, every updated parameter stored to
//! nearest (ties to even), on the GPU exactly as in the CPU reference.

mod common;

use common::*;
use wgpu_optim::{CpuOptimizer, ElementFormat, Error, GpuOptimizer, GpuTensor, Optimizer, ParamGroup, ParamGroups};

const FORMATS: [ElementFormat; 2] = [ElementFormat::BF16, ElementFormat::F16];

/// The tolerance of a 16-bit result: the f32 budget of `steps` steps, plus one rounding of
/// the format per step (a value within the f32 budget of a tie may round the other way, and
/// the next steps carry that half ulp on). Relative to `|x| + change`, as `assert_close`.
fn assert_close_16(
    label: &str,
    format: ElementFormat,
    gpu: &[f32],
    cpu: &[f32],
    change: f32,
    steps: usize,
    budget: f32,
) {
    let unit = match format {
        ElementFormat::BF16 => 2f32.powi(-8),
        _ => 2f32.powi(-11),
    };
    for (i, (&a, &b)) in gpu.iter().zip(cpu).enumerate() {
        let scale = b.abs() + change;
        let tol = steps as f32 * (budget * f32::EPSILON + unit) * scale;
        assert!(
            (a - b).abs() <= tol || (a.is_nan() && b.is_nan()),
            "{label}: element {i}: gpu {a:e} vs cpu {b:e}, tolerance {tol:e}"
        );
    }
}

fn elementwise() -> Vec<(&'static str, Box<dyn Optimizer>)> {
    variants().into_iter().filter(|(_, o)| !o.kernel().is_staged()).collect()
}

#[test]
fn every_elementwise_variant_steps_16_bit_parameters_as_the_cpu_reference() {
    let ctx = ctx();
    let mut exact = (0usize, 0usize);
    for format in FORMATS {
        for (label, opt) in elementwise() {
            for n in [1usize, 2, 3, 5, 7, 1001, 4099] {
                let p = GpuTensor::from_f32s_as(&ctx, format, &params(n)).unwrap();
                let g = GpuTensor::zeros_of(&ctx, format, n).unwrap();
                let mut gpu = GpuOptimizer::from_tensors(&ctx, opt.clone_box(), p, g.clone()).unwrap();
                let mut cpu = CpuOptimizer::new(opt.clone_box(), &params(n)).unwrap().with_format(format).unwrap();
                let mut change = 0.0f32;
                for k in 1..=6 {
                    let before = cpu.params().to_vec();
                    let grads = grads(n, k);
                    if k <= 4 {
                        gpu.step(&grads).unwrap();
                        cpu.step(&grads).unwrap();
                    } else if k == 5 {
                        // Two steps in one submit on the same gradients.
                        g.write(&ctx, &grads).unwrap();
                        gpu.run(2).unwrap();
                        cpu.step(&grads).unwrap();
                        cpu.step(&grads).unwrap();
                    }
                    change = change.max(max_change(&before, cpu.params().as_slice().unwrap()));
                }
                let label = format!("{label} {} n={n}", format.name());
                let on_gpu = gpu.read_params().unwrap().to_vec();
                assert!(on_gpu.iter().all(|&x| format.round(x).to_bits() == x.to_bits()), "{label}: stored values");
                let on_cpu = cpu.params().to_vec();
                // A step smaller than half a unit of the format leaves a parameter where it is;
                // over a thousand of them some move.
                if n >= 1001 {
                    assert_ne!(
                        on_cpu,
                        params(n).iter().map(|&x| format.round(x)).collect::<Vec<_>>(),
                        "{label}: moved"
                    );
                }
                let budget = opt.kernel().step_error_budget;
                assert_close_16(&label, format, &on_gpu, &on_cpu, change, 6, budget);
                exact.0 += on_gpu.iter().zip(&on_cpu).filter(|(a, b)| a.to_bits() == b.to_bits()).count();
                exact.1 += n;
                for (s, t) in gpu.state() {
                    let cpu_state = cpu.state_tensor(s.torch_name).unwrap().to_vec();
                    let gpu_state = t.read(&ctx).unwrap();
                    let scale = cpu_state.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                    assert_close_16(
                        &format!("{label} {}", s.torch_name),
                        format,
                        &gpu_state,
                        &cpu_state,
                        scale,
                        6,
                        budget,
                    );
                }
            }
        }
    }
    println!("16-bit parameters equal bit for bit: {} of {}", exact.0, exact.1);
}

#[test]
fn separate_16_bit_tensors_in_a_group_keep_their_own_tails() {
    // Lengths of every remainder mod 4, so the group's tails need each tail kernel.
    let ctx = ctx();
    let lens = [5usize, 7, 6, 1001, 8, 3];
    for format in FORMATS {
        for (label, opt) in elementwise().into_iter().filter(|(l, _)| ["adamw", "sgd nesterov", "lion"].contains(l)) {
            let ps: Vec<GpuTensor> =
                lens.iter().map(|&n| GpuTensor::from_f32s_as(&ctx, format, &params(n)).unwrap()).collect();
            let gs: Vec<GpuTensor> = lens.iter().map(|&n| GpuTensor::zeros_of(&ctx, format, n).unwrap()).collect();
            let mut groups = ParamGroups::new(
                &ctx,
                vec![ParamGroup::new(opt.clone_box(), ps.iter().collect(), gs.iter().collect())],
            )
            .unwrap();
            let mut cpus: Vec<CpuOptimizer> = lens
                .iter()
                .map(|&n| CpuOptimizer::new(opt.clone_box(), &params(n)).unwrap().with_format(format).unwrap())
                .collect();
            for k in 1..=3 {
                for ((g, cpu), &n) in gs.iter().zip(&mut cpus).zip(&lens) {
                    g.write(&ctx, &grads(n, k)).unwrap();
                    cpu.step(&grads(n, k)).unwrap();
                }
                groups.run(1).unwrap();
            }
            for ((p, cpu), &n) in ps.iter().zip(&cpus).zip(&lens) {
                let on_gpu = p.read(&ctx).unwrap();
                let budget = opt.kernel().step_error_budget;
                let label = format!("{label} {} n={n}", format.name());
                assert_close_16(&label, format, &on_gpu, cpu.params().as_slice().unwrap(), 0.1, 3, budget);
            }
        }
    }
}

#[test]
fn what_16_bit_parameters_cannot_do_is_refused_by_name() {
    let ctx = ctx();
    let p = GpuTensor::from_f32s_as(&ctx, ElementFormat::BF16, &params(100)).unwrap();
    let g = GpuTensor::zeros_of(&ctx, ElementFormat::BF16, 100).unwrap();
    // A reduction stage reads f32.
    match GpuOptimizer::from_tensors(&ctx, wgpu_optim::Lamb::new(1e-3), p.clone(), g.clone()) {
        Err(Error::Unsupported(m)) => assert!(m.contains("bf16") && m.contains("reduction"), "{m}"),
        Err(e) => panic!("expected Unsupported, got {e}"),
        Ok(_) => panic!("expected Unsupported, got Ok"),
    }
    match CpuOptimizer::new(wgpu_optim::Lamb::new(1e-3), &params(100)).unwrap().with_format(ElementFormat::BF16) {
        Err(Error::Unsupported(m)) => assert!(m.contains("reduction"), "{m}"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
    // Gradients in another format than the parameters.
    let g32 = GpuTensor::zeros(&ctx, 100).unwrap();
    assert!(matches!(
        GpuOptimizer::from_tensors(&ctx, wgpu_optim::AdamW::new(1e-3), p.clone(), g32),
        Err(Error::Unsupported(_))
    ));
    // Gradient control reads f32 gradients.
    let mut cpu =
        CpuOptimizer::new(wgpu_optim::AdamW::new(1e-3), &params(100)).unwrap().with_format(ElementFormat::F16).unwrap();
    let clip = wgpu_optim::GradControl { max_norm: Some(1.0), ..Default::default() };
    assert!(matches!(cpu.set_grad_control(Some(clip)), Err(Error::Unsupported(_))));
    let mut groups =
        ParamGroups::new(&ctx, vec![ParamGroup::new(wgpu_optim::AdamW::new(1e-3), vec![&p], vec![&g])]).unwrap();
    assert!(groups.set_grad_control(Some(clip)).is_err());
    // A view of an odd number of 16-bit elements inside a tensor would share a word.
    match p.slice(&ctx, 0, 7) {
        Err(Error::BadBufferRange { message, .. }) => assert!(message.contains("odd"), "{message}"),
        other => panic!("expected BadBufferRange, got {other:?}"),
    }
    let whole = p.slice(&ctx, 0, 100).unwrap();
    assert_eq!(whole.read(&ctx).unwrap(), p.read(&ctx).unwrap());
}

#[test]
fn state_kept_in_16_bits_steps_as_the_cpu_reference_and_checkpoints_in_its_format() {
    let ctx = ctx();
    let dir = std::env::temp_dir().join(format!("wgpu-optim-16-bit-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for state_format in FORMATS {
        for param_format in [ElementFormat::F32, state_format] {
            for (label, opt) in common::with_state_format(state_format) {
                let n = 1003;
                let label = format!("{label}, {} state, {} params", state_format.name(), param_format.name());
                let p = GpuTensor::from_f32s_as(&ctx, param_format, &params(n)).unwrap();
                let g = GpuTensor::zeros_of(&ctx, param_format, n).unwrap();
                let mut gpu = GpuOptimizer::from_tensors(&ctx, opt.clone_box(), p, g).unwrap();
                let mut cpu =
                    CpuOptimizer::new(opt.clone_box(), &params(n)).unwrap().with_format(param_format).unwrap();
                for k in 1..=4 {
                    gpu.step(&grads(n, k)).unwrap();
                    cpu.step(&grads(n, k)).unwrap();
                }
                let budget = opt.kernel().step_error_budget;
                let on_gpu = gpu.read_params().unwrap().to_vec();
                assert_close_16(&label, state_format, &on_gpu, cpu.params().as_slice().unwrap(), 0.1, 4, budget);
                for (slot, t) in gpu.state() {
                    assert_eq!(t.format(), state_format, "{label}: {} on the GPU", slot.torch_name);
                    let values = t.read(&ctx).unwrap();
                    assert!(values.iter().all(|&x| state_format.round(x).to_bits() == x.to_bits()), "{label}: stored");
                    let reference = cpu.state_tensor(slot.torch_name).unwrap().to_vec();
                    let scale = reference.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                    assert_close_16(
                        &format!("{label} {}", slot.torch_name),
                        state_format,
                        &values,
                        &reference,
                        scale,
                        4,
                        budget,
                    );
                }
                // Saved in its format by either side, read back by the other, and the same
                // next step.
                let (from_gpu, from_cpu) = (dir.join("gpu.safetensors"), dir.join("cpu.safetensors"));
                gpu.save(&from_gpu).unwrap();
                cpu.save(&from_cpu).unwrap();
                let state_names: Vec<String> = gpu.state().map(|(s, _)| format!("state.0.{}", s.torch_name)).collect();
                for path in [&from_gpu, &from_cpu] {
                    let bytes = std::fs::read(path).unwrap();
                    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
                    for name in &state_names {
                        let dtype = file.tensor(name).unwrap().dtype();
                        assert_eq!(format!("{dtype:?}"), state_format.name().to_uppercase(), "{label}: {name}");
                    }
                }
                let mut cpu_resumed =
                    CpuOptimizer::new(opt.clone_box(), &params(n)).unwrap().with_format(param_format).unwrap();
                cpu_resumed.load(&from_gpu).unwrap();
                let mut gpu_resumed = GpuOptimizer::from_tensors(
                    &ctx,
                    opt.clone_box(),
                    GpuTensor::from_f32s_as(&ctx, param_format, cpu.params().as_slice().unwrap()).unwrap(),
                    GpuTensor::zeros_of(&ctx, param_format, n).unwrap(),
                )
                .unwrap();
                gpu_resumed.load(&from_cpu).unwrap();
                assert_eq!(cpu_resumed.step_count(), 4, "{label}");
                // The CPU reloaded from the GPU's file and the GPU from the CPU's agree with the
                // originals' state, element for element in the format.
                for (slot, t) in gpu_resumed.state() {
                    let a = t.read(&ctx).unwrap();
                    let b = cpu.state_tensor(slot.torch_name).unwrap().to_vec();
                    assert_eq!(a, b, "{label}: {} loaded on the GPU from the CPU's checkpoint", slot.torch_name);
                }
                // The same optimizer keeping its state in f32 refuses the file, changing nothing.
                let (_, f32_config) = common::with_state_format(ElementFormat::F32)
                    .into_iter()
                    .find(|(l, _)| label.starts_with(l))
                    .unwrap();
                let mut f32_state = CpuOptimizer::new(f32_config, &params(n)).unwrap();
                assert!(matches!(f32_state.load(&from_gpu), Err(wgpu_optim::Error::Checkpoint { .. })), "{label}");
                assert_eq!(f32_state.step_count(), 0, "{label}");
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_reconfiguration_keeps_the_formats_or_is_refused() {
    use wgpu_optim::{AdamW, Lamb};
    let ctx = ctx();
    let bf16 = AdamW::new(1e-2).with_state_format(ElementFormat::BF16);
    let mut gpu = GpuOptimizer::new(&ctx, bf16.clone(), &params(64)).unwrap();
    let mut cpu = CpuOptimizer::new(bf16.clone(), &params(64)).unwrap();
    gpu.step(&grads(64, 1)).unwrap();
    cpu.step(&grads(64, 1)).unwrap();
    let before = gpu.read_params().unwrap();
    // Another state format: refused on both sides, nothing changed.
    for r in [gpu.reconfigure(AdamW::new(1e-3)), cpu.reconfigure(AdamW::new(1e-3))] {
        match r {
            Err(Error::Reconfigure(m)) => {
                assert!(m.contains("exp_avg") && m.contains("bf16") && m.contains("f32"), "{m}")
            }
            other => panic!("expected Reconfigure, got {other:?}"),
        }
    }
    // The same format with another learning rate is fine, and steps as the CPU.
    gpu.reconfigure(bf16.clone().with_weight_decay(0.2)).unwrap();
    cpu.reconfigure(bf16.with_weight_decay(0.2)).unwrap();
    gpu.step(&grads(64, 2)).unwrap();
    cpu.step(&grads(64, 2)).unwrap();
    assert_ne!(gpu.read_params().unwrap(), before);
    assert_close_16(
        "reconfigured",
        ElementFormat::BF16,
        gpu.read_params().unwrap().as_slice().unwrap(),
        cpu.params().as_slice().unwrap(),
        0.1,
        2,
        20.0,
    );
    // 16-bit parameters cannot be taken over by a reduction stage.
    let p = GpuTensor::from_f32s_as(&ctx, ElementFormat::F16, &params(64)).unwrap();
    let g = GpuTensor::zeros_of(&ctx, ElementFormat::F16, 64).unwrap();
    let mut half = GpuOptimizer::from_tensors(&ctx, AdamW::new(1e-2), p, g).unwrap();
    assert!(half.reconfigure(Lamb::new(1e-3)).is_err());
    half.step(&grads(64, 1)).unwrap();
    assert_eq!(half.step_count(), 1);
}
