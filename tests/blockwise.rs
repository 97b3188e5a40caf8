//! 8-bit blockwise state on the GPU as in the CPU reference: the same codes and absmax for
//! the same f32 values, over block tails, tensors under 4096 elements (f32 state), sub-range
//! boundaries inside a block of a tensor, groups and steps several to a submit; checkpoints
//! with the codes (U8) and each block's absmax (F32).

mod common;

use common::*;
use wgpu_optim::{
    AdamW, CpuOptimizer, ElementFormat, Error, GpuOptimizer, GpuTensor, Lion, Optimizer, ParamGroup, ParamGroups,
    Precision, Sgd,
};

const Q8: ElementFormat = ElementFormat::Blockwise8;

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// SGD with momentum 0.5 and a power-of-two learning rate: every product exact, every sum
/// one rounding whether fused or not, so the GPU and the CPU compute the same f32 values and
/// must store the same codes and absmax for them.
fn exact_sgd() -> Sgd {
    Sgd::new(2f64.powi(-4)).with_momentum(0.5).with_state_format(Q8)
}

#[test]
fn eight_bit_state_is_quantized_on_the_gpu_as_on_the_cpu_bit_for_bit() {
    let ctx = ctx();
    for format in [ElementFormat::F32, ElementFormat::BF16] {
        for n in [300usize, 4095, 4096, 4097, 4099, 5000, 70_001] {
            let label = format!("{} n={n}", format.name());
            let p = GpuTensor::from_f32s_as(&ctx, format, &params(n)).unwrap();
            let g = GpuTensor::zeros_of(&ctx, format, n).unwrap();
            let mut gpu = GpuOptimizer::from_tensors(&ctx, exact_sgd(), p, g.clone()).unwrap();
            let mut cpu = CpuOptimizer::new(exact_sgd(), &params(n)).unwrap().with_format(format).unwrap();
            for k in 1..=3 {
                gpu.step(&grads(n, k)).unwrap();
                cpu.step(&grads(n, k)).unwrap();
            }
            g.write(&ctx, &grads(n, 4)).unwrap();
            gpu.run(3).unwrap();
            for _ in 0..3 {
                cpu.step(&grads(n, 4)).unwrap();
            }
            let m = gpu.read_state("momentum_buffer").unwrap().to_vec();
            let on_cpu = cpu.state_tensor("momentum_buffer").unwrap().to_vec();
            assert_eq!(bits(&m), bits(&on_cpu), "{label}: momentum");
            assert_eq!(
                bits(gpu.read_params().unwrap().as_slice().unwrap()),
                bits(cpu.params().as_slice().unwrap()),
                "{label}"
            );
            // Quantized where the tensor has 4096 elements or more: 8-bit values of a block
            // share its absmax, so they take few distinct values.
            let state = gpu.state_tensor("momentum_buffer").unwrap();
            let expected = if n >= 4096 { n.div_ceil(256) * 260 } else { 4 * n };
            assert_eq!(
                state.segments().iter().map(|s| s.format.bytes_of(s.len as u64)).sum::<u64>(),
                expected as u64,
                "{label}: bytes"
            );
        }
    }
}

#[test]
fn a_group_cuts_each_tensor_on_its_blocks_and_keeps_small_tensors_in_f32() {
    // An arena cut into 16 KiB sub-ranges, its views starting and ending anywhere: a view's
    // sub-range boundaries fall inside its blocks until the step cuts it again on them; one
    // view is under 4096 elements (f32 state), one ends in a partial block.
    let ctx = ctx_with(|t| {
        t.segment_bytes = 16 << 10;
        t.buffer_bytes = 1 << 20;
    });
    let lens = [5000usize, 300, 9001, 4096, 6];
    for format in [ElementFormat::F32, ElementFormat::BF16] {
        let (_, ps) = GpuTensor::arena_of(&ctx, format, &lens.map(|n| n + n % 2)).unwrap();
        let (_, gs) = GpuTensor::arena_of(&ctx, format, &lens.map(|n| n + n % 2)).unwrap();
        let mut cpus = Vec::new();
        for ((p, g), &n) in ps.iter().zip(&gs).zip(&lens) {
            let n = n + n % 2;
            p.write(&ctx, &params(n)).unwrap();
            g.write(&ctx, &grads(n, 1)).unwrap();
            cpus.push(CpuOptimizer::new(exact_sgd(), &params(n)).unwrap().with_format(format).unwrap());
        }
        assert!(ps[0].segments().len() > 1, "the first view spans sub-ranges");
        let group = ParamGroup::new(exact_sgd(), ps.iter().collect(), gs.iter().collect());
        let mut groups = ParamGroups::new(&ctx, vec![group]).unwrap();
        groups.run(2).unwrap();
        for (k, (c, p)) in cpus.iter_mut().zip(&ps).enumerate() {
            let n = p.len();
            c.step(&grads(n, 1)).unwrap();
            c.step(&grads(n, 1)).unwrap();
            assert_eq!(
                bits(&p.read(&ctx).unwrap()),
                bits(c.params().as_slice().unwrap()),
                "{} tensor {k}",
                format.name()
            );
        }
    }
}

#[test]
fn every_optimizer_with_8_bit_state_steps_as_the_cpu_reference() {
    // The first step from the initial state: each new state value is one rounding of the
    // gradient's terms on both sides, so the codes agree bit for bit; the parameters (which
    // read the new state unquantized, through sqrt and division) within the f32 budget. Later
    // steps part where a value's f32 rounding differs across a code's midpoint.
    let ctx = ctx();
    for format in [ElementFormat::F32, ElementFormat::BF16] {
        for (label, opt) in common::with_state_format(Q8) {
            for n in [4099usize, 70_001] {
                let label = format!("{label} {} n={n}", format.name());
                let p = GpuTensor::from_f32s_as(&ctx, format, &params(n)).unwrap();
                let g = GpuTensor::zeros_of(&ctx, format, n).unwrap();
                let mut gpu = GpuOptimizer::from_tensors(&ctx, opt.clone_box(), p, g).unwrap();
                let mut cpu = CpuOptimizer::new(opt.clone_box(), &params(n)).unwrap().with_format(format).unwrap();
                gpu.step(&grads(n, 1)).unwrap();
                cpu.step(&grads(n, 1)).unwrap();
                for (slot, _) in gpu.state() {
                    let a = gpu.read_state(slot.torch_name).unwrap().to_vec();
                    let b = cpu.state_tensor(slot.torch_name).unwrap().to_vec();
                    assert_eq!(bits(&a), bits(&b), "{label}: {}", slot.torch_name);
                }
                let on_gpu = gpu.read_params().unwrap().to_vec();
                let budget = opt.kernel().step_error_budget;
                let unit = if format == ElementFormat::BF16 { 2f32.powi(-8) / f32::EPSILON } else { 0.0 };
                assert_close(&label, &on_gpu, cpu.params().as_slice().unwrap(), 0.1, 1, budget + unit);
            }
        }
    }
}

#[test]
fn every_optimizer_with_low_precision_state_steps_as_the_cpu_reference_in_each_mode() {
    // bf16 parameters with master weights or stochastic rounding, over 8-bit and bf16 state:
    // the first step, as above — the state bit for bit, the master within the f32 budget, the
    // parameters within it plus one bf16 unit (a value whose f32 rounding differs can round
    // to the other neighbour), and with master weights each parameter the master rounded.
    let ctx = ctx();
    let bf16 = ElementFormat::BF16;
    for state_format in [Q8, bf16] {
        for precision in [Precision::MasterWeights, Precision::StochasticRounding { seed: 11 }] {
            // Not the L2 variants: their direction `g + wd · p` is one fused multiply-add on
            // the CPU and two roundings where a device's `fma` is not fused (lavapipe's), a
            // difference of one f32 unit in the state that a code's midpoint can turn into a
            // code's step; the tests above bound those within the f32 budget.
            for (label, opt) in common::with_state_format(state_format).into_iter().filter(|(l, _)| !l.contains("l2")) {
                let n = 4099 + 256 * 7;
                let label = format!("{label} {} state {precision:?}", state_format.name());
                let p = GpuTensor::from_f32s_as(&ctx, bf16, &params(n)).unwrap();
                let g = GpuTensor::zeros_of(&ctx, bf16, n).unwrap();
                let mut gpu =
                    GpuOptimizer::from_tensors(&ctx, opt.clone_box(), p, g).unwrap().with_precision(precision).unwrap();
                let mut cpu = CpuOptimizer::new(opt.clone_box(), &params(n))
                    .unwrap()
                    .with_format(bf16)
                    .unwrap()
                    .with_precision(precision)
                    .unwrap();
                // Gradients whose L2 direction never cancels to its rounding error (where fused
                // and unfused multiply-adds part).
                let g = odd_grads(bf16, n, 1);
                gpu.step(&g).unwrap();
                cpu.step(&g).unwrap();
                let budget = opt.kernel().step_error_budget;
                for (i, slot) in opt.kernel().state.iter().enumerate().filter(|(i, _)| opt.uses_state(*i)) {
                    let a = gpu.read_state(slot.torch_name).unwrap().to_vec();
                    let b = cpu.state_tensor(slot.torch_name).unwrap().to_vec();
                    assert_eq!(bits(&a), bits(&b), "{label}: {} (slot {i})", slot.torch_name);
                }
                let on_gpu = gpu.read_params().unwrap().to_vec();
                if precision == Precision::MasterWeights {
                    let master = gpu.read_state("master_param").unwrap().to_vec();
                    let reference = cpu.state_tensor("master_param").unwrap().to_vec();
                    assert_close(&label, &master, &reference, 0.1, 1, budget);
                    let rounded: Vec<f32> = master.iter().map(|&x| bf16.round(x)).collect();
                    assert_eq!(bits(&on_gpu), bits(&rounded), "{label}: parameters are the master rounded");
                }
                let unit = 2f32.powi(-8) / f32::EPSILON;
                assert_close(&label, &on_gpu, cpu.params().as_slice().unwrap(), 0.1, 1, budget + unit);
            }
        }
    }
}

#[test]
fn checkpoints_keep_codes_and_absmax_and_resume_bit_for_bit() {
    let ctx = ctx();
    let dir = std::env::temp_dir().join(format!("wgpu-optim-8bit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let n = 5000;
    let (from_gpu, from_cpu) = (dir.join("gpu.safetensors"), dir.join("cpu.safetensors"));
    let mut gpu = GpuOptimizer::new(&ctx, exact_sgd(), &params(n)).unwrap();
    let mut cpu = CpuOptimizer::new(exact_sgd(), &params(n)).unwrap();
    for k in 1..=3 {
        gpu.step(&grads(n, k)).unwrap();
        cpu.step(&grads(n, k)).unwrap();
    }
    gpu.save(&from_gpu).unwrap();
    cpu.save(&from_cpu).unwrap();
    let bytes = std::fs::read(&from_gpu).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    // The same tensors from both sides, byte for byte.
    let other = std::fs::read(&from_cpu).unwrap();
    let other = safetensors::SafeTensors::deserialize(&other).unwrap();
    let mut names = file.names();
    names.sort();
    let mut other_names = other.names();
    other_names.sort();
    assert_eq!(names, other_names);
    for name in names {
        let (a, b) = (file.tensor(name).unwrap(), other.tensor(name).unwrap());
        assert!(a.dtype() == b.dtype() && a.shape() == b.shape() && a.data() == b.data(), "{name} differs");
    }
    let codes = file.tensor("state.0.momentum_buffer").unwrap();
    assert_eq!((format!("{:?}", codes.dtype()), codes.shape().to_vec()), ("U8".to_string(), vec![n]));
    let absmax = file.tensor("state.0.momentum_buffer.absmax").unwrap();
    assert_eq!((format!("{:?}", absmax.dtype()), absmax.shape().to_vec()), ("F32".to_string(), vec![n.div_ceil(256)]));
    // Each side resumes from the other's file: the next steps equal the run that went on.
    let now = gpu.read_params().unwrap().to_vec();
    let mut gpu_resumed = GpuOptimizer::new(&ctx, exact_sgd(), &now).unwrap();
    gpu_resumed.load(&from_cpu).unwrap();
    let mut cpu_resumed = CpuOptimizer::new(exact_sgd(), &now).unwrap();
    cpu_resumed.load(&from_gpu).unwrap();
    for k in 4..=5 {
        for o in [&mut gpu, &mut gpu_resumed] {
            o.step(&grads(n, k)).unwrap();
        }
        cpu.step(&grads(n, k)).unwrap();
        cpu_resumed.step(&grads(n, k)).unwrap();
    }
    let want = bits(gpu.read_params().unwrap().as_slice().unwrap());
    assert_eq!(bits(gpu_resumed.read_params().unwrap().as_slice().unwrap()), want, "GPU resumed");
    assert_eq!(bits(cpu_resumed.params().as_slice().unwrap()), want, "CPU resumed");
    assert_eq!(bits(cpu.params().as_slice().unwrap()), want, "CPU");
    // A configuration keeping f32 state refuses the file, changing nothing.
    let mut f32_state = GpuOptimizer::new(&ctx, Sgd::new(2f64.powi(-4)).with_momentum(0.5), &params(n)).unwrap();
    assert!(matches!(f32_state.load(&from_gpu), Err(Error::Checkpoint { .. })));
    assert_eq!(f32_state.step_count(), 0);
    // A small tensor's 8-bit state is f32 in the file, and loads back.
    let mut small = GpuOptimizer::new(&ctx, exact_sgd(), &params(100)).unwrap();
    small.step(&grads(100, 1)).unwrap();
    small.save(&from_gpu).unwrap();
    let bytes = std::fs::read(&from_gpu).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(format!("{:?}", file.tensor("state.0.momentum_buffer").unwrap().dtype()), "F32");
    let mut back = CpuOptimizer::new(exact_sgd(), &params(100)).unwrap();
    back.load(&from_gpu).unwrap();
    assert_eq!(
        back.state_tensor("momentum_buffer").unwrap().to_vec(),
        small.read_state("momentum_buffer").unwrap().to_vec()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn what_8_bit_state_cannot_do_is_refused_by_name() {
    let ctx = ctx();
    match GpuOptimizer::new(&ctx, wgpu_optim::Lamb::new(1e-3), &params(64)) {
        Ok(_) => {}
        Err(e) => panic!("LAMB with f32 state: {e}"),
    }
    let lamb = wgpu_optim::Lamb::new(1e-3);
    assert!(lamb.boxed_with_state_format(Q8).is_none(), "LAMB keeps f32 state");
    // A state tensor of 8-bit blocks reads through its optimizer.
    let gpu = GpuOptimizer::new(&ctx, exact_sgd(), &params(5000)).unwrap();
    assert!(matches!(gpu.state_tensor("momentum_buffer").unwrap().read(&ctx), Err(Error::Unsupported(_))));
}

#[test]
fn a_checkpoint_converts_to_other_state_formats_only_when_asked() {
    use wgpu_optim::checkpoint::Snapshot;
    use wgpu_optim::quant::{BLOCK, block_absmax, dequantize, qmap, quantize};
    let dir = std::env::temp_dir().join(format!("wgpu-optim-convert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let n = 5000;
    let (f32_path, q8_path) = (dir.join("f32.safetensors"), dir.join("q8.safetensors"));
    let mut f32_cpu = CpuOptimizer::new(AdamW::new(1e-2), &params(n)).unwrap();
    for k in 1..=3 {
        f32_cpu.step(&grads(n, k)).unwrap();
    }
    f32_cpu.save(&f32_path).unwrap();
    let q8 = AdamW::new(1e-2).with_state_format(Q8);
    let mut q8_cpu = CpuOptimizer::new(q8.clone(), &params(n)).unwrap();
    // Not asked: refused.
    assert!(matches!(q8_cpu.load(&f32_path), Err(Error::Checkpoint { .. })));
    // Asked: each block quantized afresh from the f32 values.
    let mut snapshot = Snapshot::load(&f32_path).unwrap();
    snapshot.convert_state(0, &q8).unwrap();
    snapshot.save(&q8_path).unwrap();
    q8_cpu.load(&q8_path).unwrap();
    let mut gpu = GpuOptimizer::new(&ctx(), q8.clone(), &params(n)).unwrap();
    gpu.load(&q8_path).unwrap();
    for (name, signed) in [("exp_avg", true), ("exp_avg_sq", false)] {
        let values = f32_cpu.state_tensor(name).unwrap().to_vec();
        let expected: Vec<f32> = values
            .chunks(BLOCK)
            .flat_map(|b| {
                let a = block_absmax(b);
                b.iter().map(move |&x| dequantize(quantize(x, a, qmap(signed)), a, qmap(signed))).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(bits(q8_cpu.state_tensor(name).unwrap().as_slice().unwrap()), bits(&expected), "{name}");
        assert_eq!(bits(&gpu.read_state(name).unwrap().to_vec()), bits(&expected), "{name} on the GPU");
    }
    // And back to f32: the dequantized values, exactly.
    let mut back = Snapshot::load(&q8_path).unwrap();
    back.convert_state(0, &AdamW::new(1e-2)).unwrap();
    back.save(&f32_path).unwrap();
    let mut again = CpuOptimizer::new(AdamW::new(1e-2), &params(n)).unwrap();
    again.load(&f32_path).unwrap();
    assert_eq!(again.state_tensor("exp_avg").unwrap(), q8_cpu.state_tensor("exp_avg").unwrap());
    // Another family cannot take the state.
    assert!(matches!(back.convert_state(0, &Lion::new(1e-3)), Err(Error::Unsupported(_))));
    std::fs::remove_dir_all(&dir).unwrap();
}
