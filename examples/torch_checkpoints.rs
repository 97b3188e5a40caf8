//! Checkpoints for torch: `write DIR` takes eight steps of each optimizer torch also has (the
//! inputs of scripts/torch_reference.py) and saves each state as `DIR/<label>.safetensors`;
//! `load DIR` loads each `DIR/<label>.back.safetensors` (the same state after a trip through
//! a real torch.optim optimizer's state_dict) into the same optimizer and checks that its
//! state is what was written. scripts/checkpoint_torch.py drives both.
//!
//! `cargo run --release --example torch_checkpoints -- write /tmp/ckpt`

use wgpu_optim::{Adadelta, Adagrad, Adam, AdamW, Adamax, CpuOptimizer, NAdam, Optimizer, RAdam, RmsProp, Sgd};

const N: usize = 32;
const STEPS: usize = 8;

fn param(i: usize) -> f32 {
    ((i * 7919 + 13) % 2001) as f32 / 512.0 - 1000.0 / 512.0
}

fn grad(i: usize, k: usize) -> f32 {
    ((i * 104729 + k * 7717 + 5) % 2001) as f32 / 1024.0 - 1000.0 / 1024.0
}

/// Every optimizer torch has, in a configuration that exercises its state.
fn cases() -> Vec<(&'static str, Box<dyn Optimizer>)> {
    vec![
        ("sgd", Sgd::new(0.1).with_momentum(0.9).into()),
        ("adam", Adam::new(1e-2).with_amsgrad(true).into()),
        ("adamw", AdamW::new(1e-2).into()),
        ("nadam", NAdam::new(1e-2).into()),
        ("radam", RAdam::new(1e-2).into()),
        ("adagrad", Adagrad::new(0.1).into()),
        ("rmsprop", RmsProp::new(1e-2).with_centered(true).with_momentum(0.5).into()),
        ("adamax", Adamax::new(1e-2).into()),
        ("adadelta", Adadelta::default().into()),
    ]
}

fn trained(o: Box<dyn Optimizer>) -> Result<CpuOptimizer, wgpu_optim::Error> {
    let mut cpu = CpuOptimizer::new(o, &(0..N).map(param).collect::<Vec<_>>())?;
    for k in 1..=STEPS {
        cpu.step(&(0..N).map(|i| grad(i, k)).collect::<Vec<_>>())?;
    }
    Ok(cpu)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (mode, dir) = match &args[..] {
        [_, mode, dir] => (mode.as_str(), std::path::PathBuf::from(dir)),
        _ => return Err("usage: torch_checkpoints write|load DIR".into()),
    };
    std::fs::create_dir_all(&dir)?;
    for (label, o) in cases() {
        let cpu = trained(o.clone_box())?;
        match mode {
            "write" => cpu.save(dir.join(format!("{label}.safetensors")))?,
            "load" => {
                let mut fresh = CpuOptimizer::new(o, &(0..N).map(param).collect::<Vec<_>>())?;
                fresh.load(dir.join(format!("{label}.back.safetensors")))?;
                assert_eq!(fresh.step_count(), cpu.step_count(), "{label}: step");
                for ((slot, a), (_, b)) in fresh.state().zip(cpu.state()) {
                    let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "{label}: {} changed on the way through torch", slot.torch_name);
                }
                println!("{label}: loaded back bit for bit");
            }
            other => return Err(format!("unknown mode {other}").into()),
        }
    }
    Ok(())
}
