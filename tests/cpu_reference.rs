//! The CPU reference against values derived independently of it: first steps worked by
//! hand, and an f64 implementation written from torch.optim's documented algorithms.

mod common;

use common::*;
use proptest::prelude::*;
use wgpu_optim::{Adam, AdamW, CpuOptimizer, Optimizer, Sgd, Threads};

/// `a` and `b` agree to `ulps` units in the last place of `b` (f32).
fn assert_ulps(label: &str, a: f32, b: f64, ulps: f64) {
    let ulp = f64::from(f32::EPSILON) * b.abs().max(f64::from(f32::MIN_POSITIVE));
    assert!(((f64::from(a)) - b).abs() <= ulps * ulp, "{label}: {a:e} vs exact {b:e} (> {ulps} ulp)");
}

#[test]
fn sgd_first_steps_by_hand() {
    // p0 = 1, g = 0.5, lr = 0.1:  p1 = 1 - 0.1 * 0.5 = 0.95.
    let mut o = CpuOptimizer::new(Sgd::new(0.1), &[1.0f32]).unwrap();
    o.step(&[0.5f32]).unwrap();
    assert_ulps("sgd p1", o.params()[0], 0.95, 0.5);

    // Momentum 0.9, dampening 0.5. Step 1: buf = g1 = 0.5 (no dampening on the first step),
    // p1 = 1 - 0.1 * 0.5 = 0.95. Step 2 (g2 = -0.25): buf = 0.9 * 0.5 + 0.5 * -0.25 = 0.325,
    // p2 = 0.95 - 0.1 * 0.325 = 0.9175.
    let mut o = CpuOptimizer::new(Sgd::new(0.1).with_momentum(0.9).with_dampening(0.5), &[1.0f32]).unwrap();
    o.step(&[0.5f32]).unwrap();
    assert_ulps("momentum buf1", o.state_tensor("momentum_buffer").unwrap()[0], 0.5, 0.0);
    assert_ulps("momentum p1", o.params()[0], 0.95, 0.5);
    o.step(&[-0.25f32]).unwrap();
    assert_ulps("momentum buf2", o.state_tensor("momentum_buffer").unwrap()[0], 0.325, 1.0);
    assert_ulps("momentum p2", o.params()[0], 0.9175, 2.0);

    // Nesterov 0.9, weight decay 0.1, maximize: d = -g + wd * p = -0.5 + 0.1 = -0.4;
    // buf = -0.4; step direction d + 0.9 * buf = -0.76; p1 = 1 + 0.076 = 1.076.
    let cfg = Sgd::new(0.1).with_momentum(0.9).with_nesterov(true).with_weight_decay(0.1).with_maximize(true);
    let mut o = CpuOptimizer::new(cfg, &[1.0f32]).unwrap();
    o.step(&[0.5f32]).unwrap();
    assert_ulps("nesterov p1", o.params()[0], 1.076, 2.0);
}

#[test]
fn adam_first_steps_by_hand() {
    // Step 1: m = 0.1 g, v = 0.001 g², so m̂ = g and sqrt(v̂) = |g|:
    // p1 = p0 - lr * g / (|g| + eps) = 1 - 0.1 * 0.5 / (0.5 + 1e-8).
    let mut o = CpuOptimizer::new(Adam::new(0.1), &[1.0f32]).unwrap();
    o.step(&[0.5f32]).unwrap();
    assert_ulps("adam m1", o.state_tensor("exp_avg").unwrap()[0], 0.05, 1.0);
    assert_ulps("adam v1", o.state_tensor("exp_avg_sq").unwrap()[0], 0.00025, 2.0);
    assert_ulps("adam p1", o.params()[0], 1.0 - 0.1 * 0.5 / (0.5 + 1e-8), 3.0);

    // AdamW, wd 0.1: the decay comes first, p1 = 1 * (1 - 0.1 * 0.1) - 0.1 = 0.89.
    let mut o = CpuOptimizer::new(AdamW::new(0.1).with_weight_decay(0.1), &[1.0f32]).unwrap();
    o.step(&[0.5f32]).unwrap();
    assert_ulps("adamw p1", o.params()[0], 0.99 - 0.1 * 0.5 / (0.5 + 1e-8), 3.0);

    // Adam with L2 0.1: g' = 0.5 + 0.1 * 1 = 0.6, and again p1 = p0 - lr * g'/(|g'| + eps).
    let mut o = CpuOptimizer::new(Adam::new(0.1).with_weight_decay(0.1), &[1.0f32]).unwrap();
    o.step(&[0.5f32]).unwrap();
    assert_ulps("adam l2 m1", o.state_tensor("exp_avg").unwrap()[0], 0.06, 2.0);
    assert_ulps("adam l2 p1", o.params()[0], 1.0 - 0.1 * 0.6 / (0.6 + 1e-8), 3.0);

    // AMSGrad, g1 = 0.5 then g2 = 0.01: v2 = 0.999 * 0.00025 + 0.001 * 0.0001 = 0.0002498500
    // < v1, so v_max stays v1 = 0.00025 and step 2 divides by sqrt(v1 / (1 - 0.999²)):
    // m2 = 0.9 * 0.05 + 0.1 * 0.01 = 0.046, m̂2 = 0.046 / 0.19.
    let mut o = CpuOptimizer::new(Adam::new(0.1).with_amsgrad(true), &[1.0f32]).unwrap();
    o.step(&[0.5f32]).unwrap();
    let p1 = f64::from(o.params()[0]);
    o.step(&[0.01f32]).unwrap();
    assert_ulps("amsgrad v2", o.state_tensor("exp_avg_sq").unwrap()[0], 0.00024985, 3.0);
    assert_ulps("amsgrad vmax2", o.state_tensor("max_exp_avg_sq").unwrap()[0], 0.00025, 2.0);
    let bc2 = 1.0 - 0.999f64 * 0.999;
    let expected = p1 - 0.1 * (0.046 / 0.19) / ((0.00025f64).sqrt() / bc2.sqrt() + 1e-8);
    assert_ulps("amsgrad p2", o.params()[0], expected, 4.0);

    // maximize ascends: p1 = 1 + 0.1.
    let mut o = CpuOptimizer::new(Adam::new(0.1).with_maximize(true), &[1.0f32]).unwrap();
    o.step(&[0.5f32]).unwrap();
    assert_ulps("adam maximize p1", o.params()[0], 1.0 + 0.1 * 0.5 / (0.5 + 1e-8), 3.0);
}

/// torch.optim's documented algorithms in f64, written from the documentation's
/// pseudo-code (not from `src/optim`), with exact hyper-parameters.
enum Exact {
    Sgd {
        lr: f64,
        momentum: f64,
        dampening: f64,
        wd: f64,
        nesterov: bool,
        maximize: bool,
        buf: Option<Vec<f64>>,
    },
    Adam {
        lr: f64,
        b1: f64,
        b2: f64,
        eps: f64,
        wd: f64,
        amsgrad: bool,
        maximize: bool,
        decoupled: bool,
        t: i32,
        m: Vec<f64>,
        v: Vec<f64>,
        vmax: Vec<f64>,
    },
}

impl Exact {
    fn step(&mut self, p: &mut [f64], grad: &[f32]) {
        match self {
            Exact::Sgd { lr, momentum, dampening, wd, nesterov, maximize, buf } => {
                let mut g: Vec<f64> =
                    grad.iter().map(|&x| if *maximize { -f64::from(x) } else { f64::from(x) }).collect();
                for (gi, pi) in g.iter_mut().zip(p.iter()) {
                    *gi += *wd * pi;
                }
                if *momentum != 0.0 {
                    let b = match buf.take() {
                        None => g.clone(),
                        Some(b) => b.iter().zip(&g).map(|(b, g)| *momentum * b + (1.0 - *dampening) * g).collect(),
                    };
                    if *nesterov {
                        for (gi, bi) in g.iter_mut().zip(&b) {
                            *gi += *momentum * bi;
                        }
                    } else {
                        g = b.clone();
                    }
                    *buf = Some(b);
                }
                for (pi, gi) in p.iter_mut().zip(&g) {
                    *pi -= *lr * gi;
                }
            }
            Exact::Adam { lr, b1, b2, eps, wd, amsgrad, maximize, decoupled, t, m, v, vmax } => {
                *t += 1;
                for i in 0..p.len() {
                    let mut g = if *maximize { -f64::from(grad[i]) } else { f64::from(grad[i]) };
                    if *decoupled {
                        p[i] *= 1.0 - *lr * *wd;
                    } else {
                        g += *wd * p[i];
                    }
                    m[i] = *b1 * m[i] + (1.0 - *b1) * g;
                    v[i] = *b2 * v[i] + (1.0 - *b2) * g * g;
                    let mhat = m[i] / (1.0 - b1.powi(*t));
                    let second = if *amsgrad {
                        vmax[i] = vmax[i].max(v[i]);
                        vmax[i]
                    } else {
                        v[i]
                    };
                    let vhat = second / (1.0 - b2.powi(*t));
                    p[i] -= *lr * mhat / (vhat.sqrt() + *eps);
                }
            }
        }
    }

    fn of_sgd(c: &Sgd) -> Self {
        Exact::Sgd {
            lr: c.lr,
            momentum: c.momentum,
            dampening: c.dampening,
            wd: c.weight_decay,
            nesterov: c.nesterov,
            maximize: c.maximize,
            buf: None,
        }
    }

    fn of_adam(c: &Adam, n: usize) -> Self {
        Exact::Adam {
            lr: c.lr,
            b1: c.betas.0,
            b2: c.betas.1,
            eps: c.eps,
            wd: c.weight_decay,
            amsgrad: c.amsgrad,
            maximize: c.maximize,
            decoupled: c.decoupled_weight_decay,
            t: 0,
            m: vec![0.0; n],
            v: vec![0.0; n],
            vmax: vec![0.0; n],
        }
    }
}

/// Error budget of one f32 CPU step against exact arithmetic, in ε: each rounded op and
/// each host scalar rounded to f32 contributes 0.5 ulp of its operand scale.
/// SGD: F(wd), fma, F(momentum), mul, F(1-dampening), fma, nesterov fma, F(lr), fma: 10 × 0.5.
/// Adam: F(1-β1), sub, fma (lerp); F(β2), F(1-β2), 3 mul, add (v, entering p at half weight
/// through sqrt); sqrt, F(√bc2), div, add eps, F(step size), mul, div, add; decay: 16 × 0.5.
fn cpu_budget(family: &str) -> f32 {
    match family {
        "sgd" => 5.0,
        _ => 8.0,
    }
}

#[test]
fn every_variant_follows_the_f64_algorithm_for_ten_steps() {
    let n = 257;
    let steps = 10;
    let cases: Vec<(&str, Box<dyn Optimizer>, Exact)> = vec![
        ("sgd", Sgd::new(0.1).into(), Exact::of_sgd(&Sgd::new(0.1))),
        (
            "sgd momentum dampening",
            Sgd::new(0.1).with_momentum(0.9).with_dampening(0.25).into(),
            Exact::of_sgd(&Sgd::new(0.1).with_momentum(0.9).with_dampening(0.25)),
        ),
        (
            "sgd nesterov wd maximize",
            Sgd::new(0.05).with_momentum(0.8).with_nesterov(true).with_weight_decay(0.01).with_maximize(true).into(),
            Exact::of_sgd(
                &Sgd::new(0.05).with_momentum(0.8).with_nesterov(true).with_weight_decay(0.01).with_maximize(true),
            ),
        ),
        ("adam", Adam::new(1e-2).into(), Exact::of_adam(&Adam::new(1e-2), n)),
        (
            "adam l2 amsgrad",
            Adam::new(1e-2).with_weight_decay(0.1).with_amsgrad(true).into(),
            Exact::of_adam(&Adam::new(1e-2).with_weight_decay(0.1).with_amsgrad(true), n),
        ),
        (
            "adam maximize low beta1",
            Adam::new(1e-2).with_maximize(true).with_betas(0.3, 0.99).into(),
            Exact::of_adam(&Adam::new(1e-2).with_maximize(true).with_betas(0.3, 0.99), n),
        ),
        (
            "adamw",
            AdamW::new(1e-2).with_weight_decay(0.1).into(),
            Exact::of_adam(&Adam::from(&AdamW::new(1e-2).with_weight_decay(0.1)), n),
        ),
        (
            "adamw amsgrad",
            AdamW::new(1e-2).with_amsgrad(true).into(),
            Exact::of_adam(&Adam::from(&AdamW::new(1e-2).with_amsgrad(true)), n),
        ),
    ];
    for (label, opt, mut exact) in cases {
        let budget = cpu_budget(opt.kernel().family);
        let mut cpu = CpuOptimizer::new(opt, &params(n)).unwrap();
        let mut p: Vec<f64> = params(n).into_iter().map(f64::from).collect();
        let mut change = 0.0f32;
        for k in 1..=steps {
            let before = cpu.params().to_vec();
            cpu.step(&grads(n, k)).unwrap();
            exact.step(&mut p, &grads(n, k));
            change = change.max(max_change(&before, cpu.params().as_slice().unwrap()));
        }
        let exact32: Vec<f32> = p.iter().map(|&x| x as f32).collect();
        assert_close(label, cpu.params().as_slice().unwrap(), &exact32, change, steps, budget);
    }
}

#[test]
fn the_parallel_baseline_is_bit_identical_to_the_sequential_reference() {
    let n = 100_003; // several parallel leaves and a ragged end
    for (label, opt) in variants() {
        let mut seq = CpuOptimizer::new(opt.clone(), &params(n)).unwrap();
        let mut par = CpuOptimizer::new(opt, &params(n)).unwrap().with_threads(Threads::Parallel);
        for k in 1..=3 {
            seq.step(&grads(n, k)).unwrap();
            par.step(&grads(n, k)).unwrap();
        }
        assert_eq!(seq.params(), par.params(), "{label}");
        for ((slot, a), (_, b)) in seq.state().zip(par.state()) {
            assert_eq!(a, b, "{label} {}", slot.torch_name);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// The update is element-wise: any split of the elements gives the same bits. This is
    /// what lets the GPU's sub-ranges and the CPU's parallel leaves share one definition.
    #[test]
    fn any_split_of_the_elements_gives_the_same_bits(
        n in 1usize..600, cut in 0usize..600, which in 0usize..1000, step in 1u64..50,
        seed in 0usize..1000,
    ) {
        let cut = cut.min(n);
        let all = variants();
        let (_, opt) = &all[which % all.len()];
        let g: Vec<f32> = (0..n).map(|i| grad(i + seed, 1)).collect();
        // p, then each state slot: full length where the configuration uses it, else empty
        // (the contract of StateSlices).
        let slots = opt.kernel().state.len();
        let mut whole: Vec<Vec<f32>> = (0..=slots)
            .map(|j| {
                let used = j == 0 || opt.uses_state(j - 1);
                (0..if used { n } else { 0 }).map(|i| param(i * (j + 1) + seed).abs()).collect()
            })
            .collect();
        let mut split = whole.clone();
        {
            let (p, state) = whole.split_first_mut().unwrap();
            let mut state: Vec<&mut [f32]> = state.iter_mut().map(|s| &mut s[..]).collect();
            opt.update_cpu(step, p, &g, &mut state);
        }
        {
            let (p, state) = split.split_first_mut().unwrap();
            let (p0, p1) = p.split_at_mut(cut);
            let (mut s0, mut s1): (Vec<&mut [f32]>, Vec<&mut [f32]>) =
                state.iter_mut().map(|s| { let at = cut.min(s.len()); s.split_at_mut(at) }).unzip();
            opt.update_cpu(step, p0, &g[..cut], &mut s0);
            opt.update_cpu(step, p1, &g[cut..], &mut s1);
        }
        for (x, y) in whole.iter().zip(&split) {
            prop_assert_eq!(
                x.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                y.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }
}
