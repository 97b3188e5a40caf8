//! Convergence in each mixed-precision mode: AdamW on the demo's linear regression and on the
//! wide MLP (6147 parameters: one tensor large enough for 8-bit state), every mode at the
//! learning rate f32 did best at, the final loss against f32's.

use crate::bench::{MODES, Mode};
use crate::error::Result;
use wgpu_optim::gpu::GpuContext;
use wgpu_optim::optim::{AdamW, Optimizer};

use super::{Model, Training, models};

/// The modes compared (bench's names).
pub const COMPARED: [&str; 9] = [
    "f32",
    "bf16",
    "bf16-master",
    "bf16-sr",
    "bf16-moments",
    "bf16-sr-bf16-moments",
    "f32-8bit",
    "bf16-sr-8bit",
    "f16-master",
];

/// One model trained in one mode.
#[derive(Clone, Debug, PartialEq)]
pub struct PrecisionRow {
    /// The model.
    pub model: &'static str,
    /// The mode ([`Mode::name`]).
    pub mode: &'static str,
    /// The learning rate (f32's best of the sweep).
    pub lr: f64,
    /// Loss after the last step.
    pub loss: f32,
    /// That loss over f32's.
    pub relative: f64,
    /// Training accuracy after the last step (the classifier).
    pub accuracy: Option<f32>,
    /// GPU memory per parameter: parameters, gradients, state, master weights.
    pub memory_per_param: f64,
}

/// The learning rates f32 AdamW is swept over; every mode then runs at f32's best.
pub const LEARNING_RATES: [f64; 3] = [3e-3, 1e-2, 3e-2];

/// Trains AdamW on each of `models` in each of `modes` (bench's names): `steps` steps each,
/// at the learning rate of `learning_rates` with f32's lowest final loss.
pub fn precision_rows(
    ctx: &GpuContext,
    models: &[Model],
    modes: &[&str],
    steps: u32,
    learning_rates: &[f64],
) -> Result<Vec<PrecisionRow>> {
    let training = Training { steps, warmup_cosine: false, clip: None };
    let adamw = AdamW::default();
    let f32_mode = &MODES[0];
    let mut rows = Vec::new();
    for model in models {
        let last = |run: &models::ModelRun| run.history.last().copied().unwrap_or([f32::NAN; 2]);
        let mut best = (f32::INFINITY, learning_rates.first().copied().unwrap_or(1e-3));
        for &lr in learning_rates {
            let run = models::train_in(ctx, model, Some(&adamw), lr, training, f32_mode)?;
            let loss = last(&run)[0];
            if loss < best.0 {
                best = (loss, lr);
            }
        }
        let (f32_loss, lr) = best;
        for name in modes {
            let mode = Mode::by_name(name)?;
            let run = models::train_in(ctx, model, Some(&adamw), lr, training, mode)?;
            let [loss, accuracy] = last(&run);
            rows.push(PrecisionRow {
                model: model.name,
                mode: mode.name,
                lr,
                loss,
                relative: f64::from(loss) / f64::from(f32_loss),
                accuracy: (model.hidden > 0).then_some(accuracy),
                memory_per_param: mode.gpu_memory(&adamw as &dyn Optimizer, &[model.init.len()]) as f64
                    / model.init.len() as f64,
            });
        }
    }
    Ok(rows)
}

/// The rows as a markdown table.
pub fn markdown(rows: &[PrecisionRow]) -> String {
    let mut s = String::from(
        "| model | mode | lr | final loss | vs f32 | accuracy | GPU bytes/param |\n|---|---|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let accuracy = r.accuracy.map_or("–".into(), |a| format!("{:.1} %", 100.0 * a));
        s += &format!(
            "| {} | {} | {} | {:.4e} | {:.3} | {accuracy} | {:.2} |\n",
            r.model, r.mode, r.lr, r.loss, r.relative, r.memory_per_param
        );
    }
    s
}
