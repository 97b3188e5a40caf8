//! The mixed-precision modes: f32 master weights of 16-bit parameters and bf16 stochastic
//! rounding, on the GPU as in the CPU reference; the random bits and the rounding rule
//! against values computed apart (scripts/stochastic_rounding_reference.py); unbiasedness;
//! checkpoints; what does not fit, refused.

mod common;

use common::*;
use wgpu_optim::precision::{bf16_stochastic, random_bits};
use wgpu_optim::{
    AdamW, CpuOptimizer, ElementFormat, Error, GpuOptimizer, GpuTensor, Optimizer, ParamGroup, ParamGroups, Precision,
    Sgd,
};

const BF16: ElementFormat = ElementFormat::BF16;

// (seed, step, index, random bits): scripts/stochastic_rounding_reference.py (pcg4d from the paper).
const RANDOM_BITS: &[(u64, u32, u64, u16)] = &[
    (0x0000000000000000, 1, 0, 0x2a9d),
    (0x0000000000000000, 1, 1, 0x9ea7),
    (0x0000000000000001, 1, 0, 0x0acb),
    (0x0000000000000000, 2, 0, 0x107e),
    (0x123456789abcdef0, 7, 12345, 0xa1c7),
    (0x000000000000002a, 1000, 4294967295, 0x4ecc),
    (0x000000000000002a, 1000, 4294967296, 0x6962),
    (0x000000000000002a, 1000, 17179869189, 0x6972),
    (0xffffffffffffffff, 4294967295, 1099511627775, 0x6526),
    (0x2ceaee21bf46bc00, 60142, 60695725756, 0x7296),
    (0xaa80754d1a1a8d4f, 32885, 22768392845, 0x4e2d),
    (0xb3c4904a6d278932, 50320, 1248667529, 0xa7a1),
    (0xbc69cf4276846d19, 27087, 65539572845, 0x7c99),
    (0x377b2fd56a5b15b4, 31535, 68005026581, 0x9704),
    (0x64d815deeaf29df3, 55317, 25214775965, 0x9aae),
    (0xf66e100db2d7d206, 28176, 229824466, 0x3b7b),
    (0x1069e6a57e06665d, 27110, 28546303590, 0x2569),
    (0x7be902917b70a2a8, 59650, 11030720674, 0xa940),
    (0x68901baf16ad70d7, 36891, 50182139248, 0xe82d),
    (0xf2caa7c38002001a, 51879, 33344717312, 0x3980),
    (0x5a55db213cf06be1, 21979, 47802282091, 0xccf3),
    (0x4c88c014892416dc, 35008, 344531990, 0x3a5f),
    (0xa0c1ac9a9822a9fb, 49580, 54133269161, 0x1603),
    (0x9e5c77e75ae9e76e, 23671, 33946266087, 0xf821),
    (0x37e83672575ac1a5, 59446, 27688131265, 0xf234),
    (0x960fde3f09756650, 4062, 61187126630, 0x84fa),
    (0xd4076a092b5c2d5f, 1898, 43103509549, 0x7125),
    (0xf4a4cb6fed689c02, 42187, 49122470044, 0x87a1),
    (0xf541557ffd59eba9, 16725, 23622146539, 0xd81d),
    (0x4285a9af717bc504, 34217, 41598155717, 0x002e),
    (0x8e4d95dd2c3a1f03, 19861, 25185499679, 0xfcfa),
    (0x7b96dae083c071d6, 38618, 46716403825, 0x7cdb),
];
// (f32 bits, random bits, bf16 bits): torchao's rule in torch 2.15.0+cu132.
const TORCHAO_SR: &[(u32, u16, u16)] = &[
    (0x3f800000, 0x0000, 0x3f80),
    (0x3f800000, 0x0001, 0x3f80),
    (0x3f800000, 0x7fff, 0x3f80),
    (0x3f800000, 0x8000, 0x3f80),
    (0x3f800000, 0xfffe, 0x3f80),
    (0x3f800000, 0xffff, 0x3f80),
    (0x3f800001, 0x0000, 0x3f81),
    (0x3f800001, 0x0001, 0x3f80),
    (0x3f800001, 0x7fff, 0x3f80),
    (0x3f800001, 0x8000, 0x3f80),
    (0x3f800001, 0xfffe, 0x3f80),
    (0x3f800001, 0xffff, 0x3f80),
    (0x3f808000, 0x0000, 0x3f81),
    (0x3f808000, 0x0001, 0x3f81),
    (0x3f808000, 0x7fff, 0x3f81),
    (0x3f808000, 0x8000, 0x3f80),
    (0x3f808000, 0xfffe, 0x3f80),
    (0x3f808000, 0xffff, 0x3f80),
    (0x3f80ffff, 0x0000, 0x3f81),
    (0x3f80ffff, 0x0001, 0x3f81),
    (0x3f80ffff, 0x7fff, 0x3f81),
    (0x3f80ffff, 0x8000, 0x3f81),
    (0x3f80ffff, 0xfffe, 0x3f81),
    (0x3f80ffff, 0xffff, 0x3f80),
    (0x3fffffff, 0x0000, 0x4000),
    (0x3fffffff, 0x0001, 0x4000),
    (0x3fffffff, 0x7fff, 0x4000),
    (0x3fffffff, 0x8000, 0x4000),
    (0x3fffffff, 0xfffe, 0x4000),
    (0x3fffffff, 0xffff, 0x3fff),
    (0x7f7fffff, 0x0000, 0x7f80),
    (0x7f7fffff, 0x0001, 0x7f80),
    (0x7f7fffff, 0x7fff, 0x7f80),
    (0x7f7fffff, 0x8000, 0x7f80),
    (0x7f7fffff, 0xfffe, 0x7f80),
    (0x7f7fffff, 0xffff, 0x7f7f),
    (0xff7f0001, 0x0000, 0xff80),
    (0xff7f0001, 0x0001, 0xff7f),
    (0xff7f0001, 0x7fff, 0xff7f),
    (0xff7f0001, 0x8000, 0xff7f),
    (0xff7f0001, 0xfffe, 0xff7f),
    (0xff7f0001, 0xffff, 0xff7f),
    (0xbf812345, 0x0000, 0xbf82),
    (0xbf812345, 0x0001, 0xbf82),
    (0xbf812345, 0x7fff, 0xbf81),
    (0xbf812345, 0x8000, 0xbf81),
    (0xbf812345, 0xfffe, 0xbf81),
    (0xbf812345, 0xffff, 0xbf81),
    (0x00000001, 0x0000, 0x0001),
    (0x00000001, 0x0001, 0x0000),
    (0x00000001, 0x7fff, 0x0000),
    (0x00000001, 0x8000, 0x0000),
    (0x00000001, 0xfffe, 0x0000),
    (0x00000001, 0xffff, 0x0000),
    (0x807fffff, 0x0000, 0x8080),
    (0x807fffff, 0x0001, 0x8080),
    (0x807fffff, 0x7fff, 0x8080),
    (0x807fffff, 0x8000, 0x8080),
    (0x807fffff, 0xfffe, 0x8080),
    (0x807fffff, 0xffff, 0x807f),
    (0x7f800000, 0x0000, 0x7f80),
    (0x7f800000, 0x0001, 0x7f80),
    (0x7f800000, 0x7fff, 0x7f80),
    (0x7f800000, 0x8000, 0x7f80),
    (0x7f800000, 0xfffe, 0x7f80),
    (0x7f800000, 0xffff, 0x7f80),
    (0xff800000, 0x0000, 0xff80),
    (0xff800000, 0x0001, 0xff80),
    (0xff800000, 0x7fff, 0xff80),
    (0xff800000, 0x8000, 0xff80),
    (0xff800000, 0xfffe, 0xff80),
    (0xff800000, 0xffff, 0xff80),
    (0x00000000, 0x0000, 0x0000),
    (0x00000000, 0x0001, 0x0000),
    (0x00000000, 0x7fff, 0x0000),
    (0x00000000, 0x8000, 0x0000),
    (0x00000000, 0xfffe, 0x0000),
    (0x00000000, 0xffff, 0x0000),
    (0x80000000, 0x0000, 0x8000),
    (0x80000000, 0x0001, 0x8000),
    (0x80000000, 0x7fff, 0x8000),
    (0x80000000, 0x8000, 0x8000),
    (0x80000000, 0xfffe, 0x8000),
    (0x80000000, 0xffff, 0x8000),
];

#[test]
fn the_random_bits_and_the_rounding_rule_are_the_papers_and_torchaos() {
    for &(seed, step, index, bits) in RANDOM_BITS {
        assert_eq!(random_bits(seed, step, index), bits, "seed {seed:#x} step {step} index {index}");
    }
    for &(x, r, bf16) in TORCHAO_SR {
        assert_eq!(bf16_stochastic(f32::from_bits(x), r), bf16, "{x:#010x} with {r:#06x}");
    }
    // A NaN stays a NaN, stored as rounding to nearest stores it (torchao's rule could make
    // an infinity of it).
    assert_eq!(bf16_stochastic(f32::from_bits(0x7f800001), 0), 0xffff);
}

/// A GPU optimizer over `params` in `format` and its CPU reference, both storing the
/// parameters `precision`'s way.
fn pair(
    ctx: &wgpu_optim::GpuContext,
    o: &dyn Optimizer,
    format: ElementFormat,
    params: &[f32],
    precision: Precision,
) -> (GpuOptimizer, GpuTensor, CpuOptimizer) {
    let p = GpuTensor::from_f32s_as(ctx, format, params).unwrap();
    let g = GpuTensor::zeros_of(ctx, format, params.len()).unwrap();
    let gpu = GpuOptimizer::from_tensors(ctx, o.clone_box(), p, g.clone()).unwrap().with_precision(precision).unwrap();
    let cpu = CpuOptimizer::new(o.clone_box(), params).unwrap().with_format(format).unwrap();
    (gpu, g, cpu.with_precision(precision).unwrap())
}

#[test]
fn master_weights_step_every_elementwise_variant_as_the_cpu_reference() {
    let ctx = ctx();
    for format in [BF16, ElementFormat::F16] {
        for (label, opt) in variants().into_iter().filter(|(_, o)| !o.kernel().is_staged()) {
            for n in [3usize, 1001, 4099] {
                let label = format!("{label} {} n={n}", format.name());
                let (mut gpu, g, mut cpu) = pair(&ctx, &*opt, format, &params(n), Precision::MasterWeights);
                let mut change = 0.0f32;
                for k in 1..=5 {
                    let before = cpu.state_tensor("master_param").unwrap().to_vec();
                    let grads = odd_grads(format, n, k);
                    if k < 4 {
                        gpu.step(&grads).unwrap();
                        cpu.step(&grads).unwrap();
                    } else if k == 4 {
                        // Two steps in one submit.
                        g.write(&ctx, &grads).unwrap();
                        gpu.run(2).unwrap();
                        cpu.step(&grads).unwrap();
                        cpu.step(&grads).unwrap();
                    }
                    let after = cpu.state_tensor("master_param").unwrap();
                    change = change.max(max_change(&before, after.as_slice().unwrap()));
                }
                let master = gpu.read_state("master_param").unwrap().to_vec();
                let cpu_master = cpu.state_tensor("master_param").unwrap().to_vec();
                let budget = opt.kernel().step_error_budget;
                assert_close(&format!("{label} master"), &master, &cpu_master, change, 6, budget);
                // The parameters are the master rounded to nearest, written in the same pass.
                let on_gpu = gpu.read_params().unwrap().to_vec();
                let rounded: Vec<f32> = master.iter().map(|&x| format.round(x)).collect();
                assert_eq!(
                    on_gpu.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    rounded.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    "{label}: parameters"
                );
                let on_cpu: Vec<f32> = cpu_master.iter().map(|&x| format.round(x)).collect();
                assert_eq!(cpu.params().to_vec(), on_cpu, "{label}: CPU parameters");
            }
        }
    }
}

#[test]
fn master_weights_and_stochastic_rounding_keep_updates_that_rounding_to_nearest_loses() {
    // Steps of lr · g = 2^-10 on parameters near 1, where bf16's unit is 2^-7: a quarter of
    // the half unit, lost by rounding to nearest every time.
    let ctx = ctx();
    let n = 4096;
    let start = vec![1.0f32; n];
    let g = vec![1.0f32; n];
    let sgd = Sgd::new(2f64.powi(-10));
    let steps = 32;
    let mut end = Vec::new();
    for precision in [Precision::RoundToNearest, Precision::MasterWeights, Precision::StochasticRounding { seed: 7 }] {
        let (mut gpu, _, _) = pair(&ctx, &sgd, BF16, &start, precision);
        for _ in 0..steps {
            gpu.step(&g).unwrap();
        }
        end.push(gpu.read_params().unwrap().to_vec());
    }
    let expected = 1.0 - steps as f32 * 2f32.powi(-10); // 0.96875, a bf16 value
    assert!(end[0].iter().all(|&x| x == 1.0), "rounding to nearest never moves");
    assert!(end[1].iter().all(|&x| x == expected), "the master weights hold every update");
    // Stochastic rounding: each step rounds to one of two neighbours, unbiased, so the mean
    // is the exact value within a few standard deviations (one element's at most half a unit
    // times sqrt(steps); the mean's over n elements 1/sqrt(n) of it).
    let mean = end[2].iter().map(|&x| f64::from(x)).sum::<f64>() / n as f64;
    let sigma = 0.5 * 2f64.powi(-7) * (steps as f64).sqrt() / (n as f64).sqrt();
    assert!((mean - f64::from(expected)).abs() < 5.0 * sigma, "mean {mean} vs {expected} (sigma {sigma:e})");
    assert!(end[2].iter().any(|&x| x != expected), "stochastic values spread");
}

#[test]
fn stochastic_rounding_is_unbiased() {
    // One step from 1 by 77/256 of bf16's unit (2^-7) at 1: exact in f32, rounded up with
    // probability 77/256 on both sides. The count of elements rounded up is binomial.
    let ctx = ctx();
    let n = 1 << 16;
    let frac = 77.0 / 256.0;
    let sgd = Sgd::new(1.0);
    let g = vec![-(77.0 * 2f32.powi(-15)); n];
    for seed in [0u64, 1, 0xdead_beef_0000_0001] {
        let precision = Precision::StochasticRounding { seed };
        let (mut gpu, _, mut cpu) = pair(&ctx, &sgd, BF16, &vec![1.0; n], precision);
        gpu.step(&g).unwrap();
        cpu.step(&g).unwrap();
        let on_gpu = gpu.read_params().unwrap().to_vec();
        assert_eq!(on_gpu, cpu.params().to_vec(), "seed {seed}: GPU and CPU bits");
        let up = on_gpu.iter().filter(|&&x| x == 1.0 + 2f32.powi(-7)).count();
        let down = on_gpu.iter().filter(|&&x| x == 1.0).count();
        assert_eq!(up + down, n, "seed {seed}: every value is a neighbour");
        let sigma = (n as f64 * frac * (1.0 - frac)).sqrt();
        let expected = n as f64 * frac;
        assert!((up as f64 - expected).abs() < 5.0 * sigma, "seed {seed}: {up} rounded up, expected {expected}");
    }
}

#[test]
fn stochastic_rounding_draws_the_same_bits_on_the_gpu_as_on_the_cpu() {
    // SGD with a power-of-two learning rate: lr · g is exact, p - lr · g one rounding whether
    // fused or not, so both sides round the same f32 value, and must draw the same bits for
    // each element and step. Small sub-ranges, tensors in separate buffers and steps several to
    // a submit exercise the element index (the sub-range's first, plus its own) and the step.
    let ctx = ctx_with(|t| {
        t.segment_bytes = 4096;
        t.buffer_bytes = 4096 * 8;
    });
    let lens = [5usize, 2048 + 3, 7, 4096 + 2, 1];
    let total: usize = lens.iter().sum();
    let all = params(total);
    let sgd = Sgd::new(2f64.powi(-6));
    let precision = Precision::StochasticRounding { seed: 0x5eed };
    let mut at = 0;
    let (mut ps, mut gs) = (Vec::new(), Vec::new());
    for &n in &lens {
        ps.push(GpuTensor::from_f32s_as(&ctx, BF16, &all[at..at + n]).unwrap());
        gs.push(GpuTensor::zeros_of(&ctx, BF16, n).unwrap());
        at += n;
    }
    let group = ParamGroup::new(sgd.clone(), ps.iter().collect(), gs.iter().collect()).with_precision(precision);
    let mut groups = ParamGroups::new(&ctx, vec![group]).unwrap();
    let mut cpu =
        CpuOptimizer::new(sgd.clone(), &all).unwrap().with_format(BF16).unwrap().with_precision(precision).unwrap();
    let mut nearest = CpuOptimizer::new(sgd, &all).unwrap().with_format(BF16).unwrap();
    let write = |k: usize| {
        let g = grads(total, k);
        let mut at = 0;
        for (t, &n) in gs.iter().zip(&lens) {
            t.write(&ctx, &g[at..at + n]).unwrap();
            at += n;
        }
        g
    };
    for k in 1..=3 {
        let g = write(k);
        groups.run(1).unwrap();
        cpu.step(&g).unwrap();
        nearest.step(&g).unwrap();
    }
    let g = write(4);
    groups.run(3).unwrap();
    for _ in 0..3 {
        cpu.step(&g).unwrap();
        nearest.step(&g).unwrap();
    }
    let on_gpu: Vec<f32> = ps.iter().flat_map(|p| p.read(&ctx).unwrap()).collect();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&on_gpu), bits(cpu.params().as_slice().unwrap()), "GPU vs CPU, bit for bit");
    assert_ne!(bits(&on_gpu), bits(nearest.params().as_slice().unwrap()), "stochastic, not nearest");
    // The parallel baseline splits the work elsewhere and draws the same bits.
    let mut parallel = CpuOptimizer::new(Sgd::new(2f64.powi(-6)), &all)
        .unwrap()
        .with_format(BF16)
        .unwrap()
        .with_precision(precision)
        .unwrap()
        .with_threads(wgpu_optim::Threads::Parallel);
    for k in 1..=3 {
        parallel.step(&grads(total, k)).unwrap();
    }
    for _ in 0..3 {
        parallel.step(&grads(total, 4)).unwrap();
    }
    assert_eq!(bits(parallel.params().as_slice().unwrap()), bits(&on_gpu), "parallel CPU");
}

#[test]
fn checkpoints_keep_the_master_weights_and_the_precision() {
    let ctx = ctx();
    let dir = std::env::temp_dir().join(format!("wgpu-optim-mixed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let n = 1003;
    let adamw = AdamW::new(1e-2).with_weight_decay(0.1);
    for precision in [Precision::MasterWeights, Precision::StochasticRounding { seed: 3 }] {
        let (mut gpu, _, mut cpu) = pair(&ctx, &adamw, BF16, &params(n), precision);
        for k in 1..=3 {
            gpu.step(&grads(n, k)).unwrap();
            cpu.step(&grads(n, k)).unwrap();
        }
        let path = dir.join("gpu.safetensors");
        gpu.save(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let has_master = file.names().contains(&"state.0.master_param");
        assert_eq!(has_master, precision == Precision::MasterWeights, "{precision:?}");
        // Resumed on the other side from the parameters as they are: the same next steps.
        let resumed_params = gpu.read_params().unwrap().to_vec();
        let mut resumed = CpuOptimizer::new(adamw.clone(), &resumed_params)
            .unwrap()
            .with_format(BF16)
            .unwrap()
            .with_precision(precision)
            .unwrap();
        resumed.load(&path).unwrap();
        assert_eq!(resumed.step_count(), 3);
        if precision == Precision::MasterWeights {
            assert_eq!(
                resumed.state_tensor("master_param").unwrap().to_vec(),
                gpu.read_state("master_param").unwrap().to_vec(),
                "master loaded"
            );
        }
        let mut gpu_resumed = {
            let (g, _, _) = pair(&ctx, &adamw, BF16, &resumed_params, precision);
            g
        };
        gpu_resumed.load(&path).unwrap();
        gpu.step(&grads(n, 4)).unwrap();
        gpu_resumed.step(&grads(n, 4)).unwrap();
        assert_eq!(
            gpu.read_params().unwrap(),
            gpu_resumed.read_params().unwrap(),
            "{precision:?}: resumed bit for bit"
        );
        // Another precision, or another seed, is refused and changes nothing.
        for other in [Precision::RoundToNearest, Precision::StochasticRounding { seed: 4 }] {
            let p = GpuTensor::from_f32s_as(&ctx, BF16, &resumed_params).unwrap();
            let g = GpuTensor::zeros_of(&ctx, BF16, n).unwrap();
            let mut wrong =
                GpuOptimizer::from_tensors(&ctx, adamw.clone(), p, g).unwrap().with_precision(other).unwrap();
            match wrong.load(&path) {
                Err(Error::Checkpoint { message, .. }) => assert!(message.contains("precision"), "{message}"),
                other => panic!("expected Checkpoint, got {other:?}"),
            }
            assert_eq!(wrong.step_count(), 0);
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn what_a_precision_cannot_do_is_refused_by_name() {
    let ctx = ctx();
    let refused = |r: wgpu_optim::Result<GpuOptimizer>, words: &[&str]| match r {
        Err(Error::Unsupported(m)) => assert!(words.iter().all(|w| m.contains(w)), "{m}"),
        Err(e) => panic!("expected Unsupported, got {e}"),
        Ok(_) => panic!("expected Unsupported, got Ok"),
    };
    let make = |format: ElementFormat, o: Box<dyn Optimizer>| {
        let p = GpuTensor::from_f32s_as(&ctx, format, &params(64)).unwrap();
        let g = GpuTensor::zeros_of(&ctx, format, 64).unwrap();
        GpuOptimizer::from_tensors(&ctx, o, p, g).unwrap()
    };
    let sr = Precision::StochasticRounding { seed: 1 };
    refused(make(ElementFormat::F16, AdamW::new(1e-3).into()).with_precision(sr), &["f16", "bf16"]);
    refused(make(ElementFormat::F32, AdamW::new(1e-3).into()).with_precision(sr), &["f32"]);
    refused(
        make(ElementFormat::F32, AdamW::new(1e-3).into()).with_precision(Precision::MasterWeights),
        &["f32", "master"],
    );
    let lamb = make(ElementFormat::F32, wgpu_optim::Lamb::new(1e-3).into());
    refused(lamb.with_precision(Precision::MasterWeights), &["LAMB"]);
    let mut stepped = make(BF16, AdamW::new(1e-3).into());
    stepped.step(&grads(64, 1)).unwrap();
    refused(stepped.with_precision(Precision::MasterWeights), &["before the first step"]);
    let cpu = CpuOptimizer::new(AdamW::new(1e-3), &params(64)).unwrap();
    assert!(matches!(cpu.with_precision(sr), Err(Error::Unsupported(_))));
}
