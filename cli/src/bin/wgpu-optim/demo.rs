//! `wgpu-optim demo`: every optimizer on the test functions and the small models, as
//! pictures and a convergence table.

use std::path::Path;

use indicatif::ProgressBar;
use wgpu_optim::GpuContext;
use wgpu_optim_cli::demo;

use crate::{AnyResult, describe};

/// Runs the demo with `config` and writes its pictures and tables into `out`.
pub fn demo(config: &demo::DemoConfig, out: &Path) -> AnyResult<()> {
    let ctx = GpuContext::new()?;
    println!("adapter: {}", describe(&ctx));
    println!(
        "{} optimizers (their references' defaults, SGD also with momentum 0.9); learning rates swept over {:?}, \
             each problem keeping the best",
        demo::optimizers().len(),
        config.learning_rates
    );
    println!(
        "test functions: {} starts per learning rate (the classic one first) × {} steps; \
             models: {} full-batch steps{}{}",
        config.starts,
        config.steps,
        config.model_steps,
        if config.warmup_cosine { ", warmup + cosine" } else { "" },
        config.clip.map_or(String::new(), |c| format!(", gradient norm clipped to {c}"))
    );
    println!(
        "LAMB, LARS and Adafactor run on the models only: their trust ratios, relative step and update clipping are statistics of the whole tensor, which would couple a batch of independent 2-D problems; Muon (with AdamW on the biases) runs on the MLP's weight matrices"
    );
    let bar = ProgressBar::new_spinner();
    let report = demo::run_all(&ctx, config, &|what| bar.set_message(format!("running {what}")))?;
    bar.finish_and_clear();
    let files = report.write(out, config)?;
    print!("{}", std::fs::read_to_string(out.join("convergence.md"))?);
    for f in files {
        println!("wrote {}", f.display());
    }
    Ok(())
}
