//! AdamW in every mixed-precision mode on the demo's linear regression and wide MLP, the
//! final loss against f32's (the demo's `precision.md`, alone):
//!
//!     cargo run --release --example precision -- [steps (500)] [seed (42)]

use wgpu_optim::gpu::GpuContext;
use wgpu_optim_cli::demo::Model;
use wgpu_optim_cli::demo::precision::{COMPARED, LEARNING_RATES, markdown, precision_rows};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let steps: u32 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(500);
    let seed: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(42);
    let ctx = GpuContext::new()?;
    let models = [Model::linear_regression(seed), Model::wide_mlp(seed)];
    let rows = precision_rows(&ctx, &models, &COMPARED, steps, &LEARNING_RATES)?;
    print!("{}", markdown(&rows));
    Ok(())
}
