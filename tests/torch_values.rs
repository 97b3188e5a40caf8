//! The CPU reference and the GPU against torch.optim itself: final parameters after three
//! steps, as printed by `scripts/torch_reference.py` (which rebuilds these tests' inputs
//! exactly) under torch 2.15.0 on an x86-64 CPU with AVX-512, single-tensor path.

mod common;

use common::*;
use wgpu_optim::{Adam, AdamW, CpuOptimizer, GpuOptimizer, Optimizer, Sgd};

const N: usize = 32;
const STEPS: usize = 3;

#[rustfmt::skip]
const TORCH: &[(&str, [u32; N])] = &[
    // torch 2.15.0+cu132, CPU, foreach=False; N = 32, 3 steps
    ("sgd momentum dampening", [0xc00c148b, 0x400276a4, 0x3fd918d1, 0x3f9a81f3, 0x3fc35852, 0x3f9783db, 0x3f31d9fb, 0x3f81c35c, 0x3f2bddcb, 0x3e3ac043, 0x3f005ccd, 0x3e22cf7d, 0xbea8f3b6, 0xbc3347b2, 0xbeb4ec19, 0xbf57a3c7, 0xbf05f70b, 0xbf5d9ff8, 0xbfad66da, 0xbf639c29, 0xbfb064f2, 0xbfeefbcf, 0xbfb3630b, 0xbff1f9e7, 0x3fc3af3c, 0x3fff4800, 0x3fc0b124, 0x3f821a45, 0x3fbdb30b, 0x3f7e385a, 0x3f844dfb, 0x3f783c28]),
    ("sgd nesterov wd maximize", [0xbfca1aea, 0x3fc7a643, 0x3fc24a46, 0x3fe9f40c, 0x3f8b0cb8, 0x3f85b0bb, 0x3fad5a81, 0x3f1ce659, 0x3f122e5f, 0x3f6181ea, 0x3e0ecd06, 0x3dc7da3c, 0x3ed09da6, 0xbeaaffab, 0xbec06f9e, 0xbd87221f, 0xbf4eb2eb, 0xbf596ae6, 0xbf0a175b, 0xbfd0f8c4, 0xbfa94efe, 0xbf81a538, 0xc006c928, 0xbfe5e88a, 0x401934df, 0x3fa67ca5, 0x3fce266b, 0x3ff5d031, 0x3f53c635, 0x3f918ce0, 0x3f5f3138, 0x3eb5263d]),
    ("adam", [0xbffa5433, 0x3feb1575, 0x3fd34c06, 0x3fba25d0, 0x3fab492b, 0x3f9344f2, 0x3f74c140, 0x3f56f905, 0x3f265fb4, 0x3eea7067, 0x3eaebe0a, 0x3e18941c, 0xbd24fba1, 0xbe20ee58, 0xbeb42c85, 0xbf09d6b6, 0xbf27d6b9, 0xbf5a4655, 0xbf84ae73, 0xbf927673, 0xbfad335f, 0xbfc47133, 0xbfd23854, 0xbfed3bc4, 0x3ff00c57, 0x3fe2457c, 0x3fc70330, 0x3fb04a23, 0x3fa282f0, 0x3f870952, 0x3f6ae8ad, 0x3f457fdd]),
    ("adam l2 amsgrad", [0xbffa06d3, 0x3feac3bb, 0x3fd16bbc, 0x3fba11b0, 0x3fab0d6c, 0x3f91e517, 0x3f74a7a1, 0x3f56ae08, 0x3f24c48b, 0x3eea5885, 0x3eae81fe, 0x3e171507, 0xbd24eb0f, 0xbe20b12c, 0xbeb26d9c, 0xbf09c92c, 0xbf2799dd, 0xbf583488, 0xbf84a191, 0xbf927102, 0xbfab9cc5, 0xbfc45e3e, 0xbfd23054, 0xbfeb2543, 0x3ff0016a, 0x3fe22d54, 0x3fc61e6a, 0x3fb04252, 0x3fa271c6, 0x3f867247, 0x3f6a5386, 0x3f456b45]),
    ("adam maximize low beta1", [0xbff3c16b, 0x3fe62c15, 0x3fd17ac9, 0x3fc0cc1e, 0x3fa67975, 0x3f91ebdc, 0x3f811833, 0x3f4d8da6, 0x3f24de98, 0x3f02c60d, 0x3e9c5074, 0x3e180e25, 0x3c56638a, 0xbe44f5fb, 0xbeb190d3, 0xbef829a1, 0xbf30a3ab, 0xbf5793c9, 0xbf7b84d1, 0xbf9a7896, 0xbfab3330, 0xbfbd7b1f, 0xbfda3b93, 0xbfeaa114, 0x3ff70b8b, 0x3fda4150, 0x3fca2c66, 0x3fb751a7, 0x3f9a7e14, 0x3f8ab502, 0x3f685958, 0x3f357578]),
    ("adamw", [0xbffa4127, 0x3feb0385, 0x3fd33bdd, 0x3fba1756, 0x3fab3c21, 0x3f9339b1, 0x3f74ae17, 0x3f56e8bc, 0x3f2652ff, 0x3eea5dab, 0x3eaeb10e, 0x3e188885, 0xbd24f4d5, 0xbe20e126, 0xbeb41eb4, 0xbf09cc7f, 0xbf27c9a2, 0xbf5a359f, 0xbf84a471, 0xbf926b02, 0xbfad261e, 0xbfc4624c, 0xbfd227fd, 0xbfed299c, 0x3feff9b7, 0x3fe2344c, 0x3fc6f3d2, 0x3fb03c69, 0x3fa276a5, 0x3f86feda, 0x3f6ad6ae, 0x3f457114]),
    ("adamw amsgrad wd", [0xbff81a7c, 0x3fe8fd04, 0x3fd168d0, 0x3fb874d8, 0x3fa9c32b, 0x3f91f456, 0x3f728432, 0x3f5511e7, 0x3f24e3c0, 0x3ee84013, 0x3ead3993, 0x3e173977, 0xbd243012, 0xbe1f63bc, 0xbeb28f50, 0xbf08a51a, 0xbf264f30, 0xbf585286, 0xbf838334, 0xbf91203d, 0xbfaba6e6, 0xbfc2b383, 0xbfd04fac, 0xbfeb1cb1, 0x3feddf57, 0x3fe04374, 0x3fc53792, 0x3faeaf94, 0x3fa1135a, 0x3f85d032, 0x3f68ce7d, 0x3f43c595]),
];

fn config(label: &str) -> Box<dyn Optimizer> {
    match label {
        "sgd momentum dampening" => Sgd::new(0.1).with_momentum(0.9).with_dampening(0.25).into(),
        "sgd nesterov wd maximize" => {
            Sgd::new(0.1).with_momentum(0.8).with_nesterov(true).with_weight_decay(0.01).with_maximize(true).into()
        }
        "adam" => Adam::new(1e-2).into(),
        "adam l2 amsgrad" => Adam::new(1e-2).with_weight_decay(0.1).with_amsgrad(true).into(),
        "adam maximize low beta1" => Adam::new(1e-2).with_maximize(true).with_betas(0.3, 0.99).into(),
        "adamw" => AdamW::new(1e-2).into(),
        "adamw amsgrad wd" => AdamW::new(1e-2).with_amsgrad(true).with_weight_decay(0.3).into(),
        other => panic!("no config for {other}"),
    }
}

/// Distance in units in the last place between two finite f32 of the same sign.
fn ulps(a: f32, b: f32) -> u32 {
    assert_eq!(a.is_sign_negative(), b.is_sign_negative(), "{a} vs {b}");
    a.to_bits().abs_diff(b.to_bits())
}

#[test]
fn the_cpu_reference_matches_torch_to_the_ulp() {
    // Bit for bit: the reference uses a fused multiply-add exactly where torch's vectorised
    // CPU kernels do (add with alpha, lerp) and rounds every other op once, as they do. Rust's
    // `mul_add` is always fused, so these bits do not depend on the machine the test runs on.
    for (label, bits) in TORCH {
        let mut cpu = CpuOptimizer::new(config(label), &params(N)).unwrap();
        for k in 1..=STEPS {
            cpu.step(&grads(N, k)).unwrap();
        }
        for (i, (&ours, &theirs)) in cpu.params().iter().zip(bits).enumerate() {
            let theirs = f32::from_bits(theirs);
            let d = ulps(ours, theirs);
            assert!(d == 0, "{label} element {i}: ours {ours:e}, torch {theirs:e} ({d} ulp)");
        }
    }
}

#[test]
fn the_gpu_matches_torch_within_its_error_budget() {
    let ctx = ctx();
    for (label, bits) in TORCH {
        let opt = config(label);
        let budget = opt.kernel().step_error_budget;
        let mut gpu = GpuOptimizer::new(&ctx, opt, &params(N)).unwrap();
        for k in 1..=STEPS {
            gpu.step(&grads(N, k)).unwrap();
        }
        let torch: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
        let change = max_change(&params(N), &torch);
        assert_close(label, gpu.read_params().unwrap().as_slice().unwrap(), &torch, change, STEPS, budget);
    }
}
