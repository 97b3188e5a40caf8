//! Random sequences of API calls — build, step, run k, reconfigure (valid and invalid),
//! schedules, gradient control on and off, non-finite gradients, save and load (valid and
//! damaged files), health — on a GPU optimizer and its CPU twin. After every call: no panic,
//! a failed call left the parameters, every state and the step count bit-identical, and the
//! two sides agree within the optimizer's error budget.

mod common;

use common::*;
use proptest::prelude::*;
use wgpu_optim::schedule::ExponentialLr;
use wgpu_optim::{AdamW, CpuOptimizer, Error, GpuOptimizer, GradControl, Optimizer, ParamGroups};

#[derive(Clone, Debug)]
enum Call {
    /// One step with gradients of seed `k`, one element NaN if `poison`.
    Step {
        k: usize,
        poison: bool,
    },
    /// `n` steps on the same gradients.
    Run {
        n: u32,
    },
    /// A new configuration: learning rate and weight decay (negative ones are refused).
    Reconfigure {
        lr: f64,
        wd: f64,
    },
    /// A schedule with this decay, or none.
    Schedule(Option<f64>),
    /// A power-of-two loss scale (exact unscaling on both sides), or control off.
    Control(Option<u32>),
    /// Save, then load the file back (valid), or a copy with bit `bit` flipped (damaged).
    SaveLoad {
        damage: Option<usize>,
    },
    Health,
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        4 => (1usize..50, any::<bool>()).prop_map(|(k, poison)| Call::Step { k, poison }),
        2 => (0u32..4).prop_map(|n| Call::Run { n }),
        1 => (prop_oneof![Just(-1e-2), 1e-4f64..1e-1], prop_oneof![Just(-0.5), 0.0f64..0.2])
            .prop_map(|(lr, wd)| Call::Reconfigure { lr, wd }),
        1 => prop::option::of(0.5f64..1.0).prop_map(Call::Schedule),
        1 => prop::option::of(0u32..12).prop_map(Call::Control),
        1 => prop::option::of(0usize..100_000).prop_map(|damage| Call::SaveLoad { damage }),
        1 => Just(Call::Health),
    ]
}

/// Parameters, every state tensor and the step count, as bits.
fn snapshot_gpu(g: &ParamGroups) -> (Vec<Vec<u32>>, u64) {
    let o = &g.groups()[0];
    let ctx = o.context();
    let mut all = vec![o.read_params().unwrap().to_vec()];
    all.extend(o.state().map(|(_, t)| t.read(ctx).unwrap()));
    (all.iter().map(|v| v.iter().map(|x| x.to_bits()).collect()).collect(), o.read_gpu_step().unwrap())
}

fn snapshot_cpu(c: &CpuOptimizer) -> (Vec<Vec<u32>>, u64) {
    let mut all = vec![c.params().to_vec()];
    all.extend(c.state().map(|(_, t)| t.to_vec()));
    (all.iter().map(|v| v.iter().map(|x| x.to_bits()).collect()).collect(), c.step_count())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, max_shrink_iters: 256, ..ProptestConfig::default() })]
    #[test]
    fn random_call_sequences_keep_every_promise(n in 1usize..300, calls in prop::collection::vec(call(), 1..16)) {
        let ctx = ctx();
        let dir = std::env::temp_dir();
        let path = dir.join(format!("wgpu-optim-seq-{}-{n}.safetensors", std::process::id()));
        let damaged = path.with_extension("damaged");
        let start = AdamW::new(1e-2).with_weight_decay(0.01);
        let mut gpu = ParamGroups::from_optimizers(vec![GpuOptimizer::new(&ctx, start.clone(), &params(n)).unwrap()]).unwrap();
        let mut cpu = CpuOptimizer::new(start.clone(), &params(n)).unwrap();
        let mut grads_now = grads(n, 1);
        let mut change = 0.0f32;
        for c in &calls {
            let before = (snapshot_gpu(&gpu), snapshot_cpu(&cpu));
            let cpu_before = cpu.params().to_vec();
            // Each side's result: Ok, or a typed error (every `Error` is one); a failure must
            // leave that side as it was.
            let (on_gpu, on_cpu): (Result<(), Error>, Result<(), Error>) = match c {
                Call::Step { k, poison } => {
                    grads_now = grads(n, *k);
                    if *poison && gpu.read_grad_control().unwrap().is_some() {
                        grads_now[k % n] = f32::NAN;
                    }
                    gpu.groups()[0].grads().write(&ctx, &grads_now).unwrap();
                    (gpu.run(1), cpu.step(&grads_now))
                }
                Call::Run { n: k } => {
                    gpu.groups()[0].grads().write(&ctx, &grads_now).unwrap();
                    let g = gpu.run(*k);
                    let mut c = Ok(());
                    for _ in 0..*k {
                        c = c.and(cpu.step(&grads_now));
                    }
                    (g, c)
                }
                Call::Reconfigure { lr, wd } => {
                    let o = AdamW::new(*lr).with_weight_decay(*wd);
                    (gpu.reconfigure(0, o.clone()), cpu.reconfigure(o))
                }
                Call::Schedule(gamma) => {
                    let s = || gamma.map(|g| ExponentialLr::new(g).unwrap().into());
                    (gpu.set_schedule(s()), cpu.set_schedule(s()))
                }
                Call::Control(scale) => {
                    let c = scale.map(|e| GradControl { loss_scale: (1u32 << e) as f32, ..Default::default() });
                    // A scaled step reads g / scale: feed scaled gradients from now on.
                    (gpu.set_grad_control(c), cpu.set_grad_control(c))
                }
                Call::SaveLoad { damage } => {
                    // Save only once both sides agree on their step count (a skipped step
                    // counts on the host until synced).
                    gpu.sync().map(|_| ()).ok();
                    gpu.save(&path).unwrap();
                    let file = match damage {
                        None => path.clone(),
                        Some(bit) => {
                            let mut bytes = std::fs::read(&path).unwrap();
                            let bit = bit % (bytes.len() * 8);
                            bytes[bit / 8] ^= 1 << (bit % 8);
                            std::fs::write(&damaged, bytes).unwrap();
                            damaged.clone()
                        }
                    };
                    let g = gpu.load(&file);
                    if damage.is_some() {
                        prop_assert!(matches!(g, Err(Error::Checkpoint { .. })), "damaged file loaded: {g:?}");
                    } else {
                        prop_assert!(g.is_ok(), "own file refused: {g:?}");
                    }
                    (g, Ok(()))
                }
                Call::Health => {
                    let h = gpu.health();
                    prop_assert!(h.is_ok(), "{h:?}");
                    (h.map(|_| ()), Ok(()))
                }
            };
            if on_gpu.is_err() {
                prop_assert_eq!(&snapshot_gpu(&gpu), &before.0, "{:?} failed ({:?}) and changed the GPU side", c, on_gpu);
            }
            if on_cpu.is_err() {
                prop_assert_eq!(&snapshot_cpu(&cpu), &before.1, "{:?} failed ({:?}) and changed the CPU side", c, on_cpu);
            }
            // Both sides accept and refuse the same calls (a file exists only on the GPU side).
            if !matches!(c, Call::SaveLoad { .. } | Call::Health) {
                prop_assert_eq!(on_gpu.is_ok(), on_cpu.is_ok(), "{:?}: gpu {:?} cpu {:?}", c, on_gpu, on_cpu);
            }
            gpu.sync().ok();
            let taken = cpu.step_count() as usize;
            change = change.max(max_change(&cpu_before, cpu.params().as_slice().unwrap()));
            let (g, cc) = (snapshot_gpu(&gpu), snapshot_cpu(&cpu));
            prop_assert_eq!(g.1, cc.1, "step counts after {:?}", c);
            let on_gpu = gpu.groups()[0].read_params().unwrap();
            assert_close(&format!("after {c:?}"), on_gpu.as_slice().unwrap(), cpu.params().as_slice().unwrap(), change, taken.max(1), start.kernel().step_error_budget);
            prop_assert_eq!(gpu.groups()[0].optimizer().lr(), cpu.optimizer().lr(), "learning rates after {:?}", c);
        }
        std::fs::remove_file(&path).ok();
        std::fs::remove_file(&damaged).ok();
    }
}
