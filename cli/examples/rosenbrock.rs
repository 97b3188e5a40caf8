//! Thousands of Rosenbrock problems as one GPU batch: Adam at three learning rates (one
//! parameter group each) from 1024 starts, 2000 steps, then where the classic start ended and
//! how many starts reached the minimum. `wgpu-optim demo` runs every optimizer this way.

use wgpu_optim::{Adam, GpuContext};
use wgpu_optim_cli::demo::{Batch, FUNCTIONS, functions};

fn main() -> Result<(), wgpu_optim_cli::Error> {
    let ctx = GpuContext::new()?;
    let rosenbrock = &FUNCTIONS[0];
    let batch = Batch { starts: 1024, steps: 2000, threshold: 1e-4, seed: 42 };
    let runs = functions::run(&ctx, rosenbrock, &Adam::default(), &[1e-2, 3e-2, 1e-1], batch)?;
    for run in &runs {
        let [x, y] = run.ends[0];
        let reached =
            run.ends.iter().filter(|e| rosenbrock.distance_to_minimum(e[0].into(), e[1].into()) < 0.01).count();
        println!(
            "lr {:<5} classic start ended at ({x:.4}, {y:.4}); {reached} of {} starts within 0.01 of (1, 1)",
            run.lr,
            run.ends.len()
        );
    }
    println!("{:.2} s for {} problems × {} steps", runs[0].seconds, runs.len() * batch.starts, batch.steps);
    Ok(())
}
