//! A long run: a 50-tensor AdamW group with global-norm clipping, 200 000 steps, a health
//! check every 100 steps; prints the process's resident memory as it goes, which must stay
//! flat (nothing accumulates per step or per check).
//!
//!     cargo run --release --example soak [-- STEPS]

use wgpu_optim::{AdamW, GpuContext, GpuTensor, GradControl, ParamGroup, ParamGroups};

/// The process's resident set size in KiB (Linux), or 0 where the system does not say.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let steps: u32 = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(200_000);
    let ctx = GpuContext::new()?;
    let lens: Vec<usize> = (0..50).map(|i| 256 + 97 * i).collect();
    let params: Vec<GpuTensor> = lens
        .iter()
        .map(|&n| GpuTensor::from_slice(&ctx, &(0..n).map(|i| (i as f32 * 0.01).sin()).collect::<Vec<_>>()))
        .collect::<Result<_, _>>()?;
    let grads: Vec<GpuTensor> = lens
        .iter()
        .map(|&n| GpuTensor::from_slice(&ctx, &(0..n).map(|i| (i as f32 * 0.37).cos() * 0.1).collect::<Vec<_>>()))
        .collect::<Result<_, _>>()?;
    let mut groups = ParamGroups::new(
        &ctx,
        vec![ParamGroup::new(
            AdamW::new(1e-4).with_weight_decay(0.01),
            params.iter().collect(),
            grads.iter().collect(),
        )],
    )?;
    groups.set_grad_control(Some(GradControl { max_norm: Some(1.0), ..Default::default() }))?;
    groups.track_updates(true)?;
    let start = std::time::Instant::now();
    let mut first = None;
    let mut most = 0;
    for done in (100..=steps).step_by(100) {
        groups.run(100)?;
        let health = groups.health()?;
        if health.iter().any(|h| h.nan > 0 || h.inf > 0) {
            return Err(format!("non-finite values at step {done}").into());
        }
        let rss = rss_kib();
        most = most.max(rss);
        if done % 20_000 == 0 || done == 100 {
            first.get_or_insert(rss);
            println!("step {done:>7}: resident {rss} KiB, {:.0} s", start.elapsed().as_secs_f64());
        }
    }
    println!(
        "{steps} steps, health every 100: resident {} KiB at step 100, at most {most} KiB; {:.1} s",
        first.unwrap_or(0),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
