//! The demo's runs: every optimizer on every problem with its learning-rate sweep, the kept
//! runs, the table rows, and the files written from them.

use crate::error::Result;
use wgpu_optim::gpu::GpuContext;
use wgpu_optim::optim::Optimizer;

use super::{
    Batch, FUNCTIONS, FunctionRow, FunctionRun, LEARNING_RATES, Labelled, Model, ModelRow, ModelRun, TestFunction,
    Training, best_block, function_optimizers, functions, models, optimizers, plot, table,
};

/// What the demo runs.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// Random starts per learning rate on each test function (a multiple of 32).
    pub starts: usize,
    /// Steps on the test functions.
    pub steps: u32,
    /// Steps of model training.
    pub model_steps: u32,
    /// f − f* a start must fall below to count as converged.
    pub threshold: f32,
    /// Seed of the starts, the data and the initial weights.
    pub seed: u64,
    /// Learning rates swept per optimizer and problem.
    pub learning_rates: Vec<f64>,
    /// Train the models with linear warmup then cosine decay.
    pub warmup_cosine: bool,
    /// Clip the models' gradient norm to this.
    pub clip: Option<f32>,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            starts: 1024,
            steps: 2000,
            model_steps: 500,
            threshold: 1e-4,
            seed: 42,
            learning_rates: LEARNING_RATES.to_vec(),
            warmup_cosine: false,
            clip: None,
        }
    }
}

/// Everything the demo measured, with the runs the pictures were drawn from.
pub struct Report {
    /// Test-function rows, by problem then optimizer.
    pub functions: Vec<FunctionRow>,
    /// Model rows, by model then optimizer.
    pub models: Vec<ModelRow>,
    /// The kept run of each optimizer on each test function.
    pub function_runs: Vec<(TestFunction, Labelled<FunctionRun>)>,
    /// The kept run of each optimizer on each model.
    pub model_runs: Vec<(Model, Labelled<ModelRun>)>,
    /// AdamW on the models in each mixed-precision mode.
    pub precision: Vec<super::precision::PrecisionRow>,
}

/// The loss a model must fall below for the table's "steps to threshold".
pub fn model_threshold(model: &Model) -> f32 {
    if model.name == "mlp" { 0.3 } else { 1e-3 }
}

/// Every optimizer on `function`: the learning-rate sweep as one batch, then the kept
/// learning rate alone (for its wall time).
pub fn function_rows(
    ctx: &GpuContext,
    f: &TestFunction,
    config: &DemoConfig,
) -> Result<(Vec<FunctionRow>, Labelled<FunctionRun>)> {
    let batch = Batch { starts: config.starts, steps: config.steps, threshold: config.threshold, seed: config.seed };
    let gap = |end: &[f32; 2]| f.value(f64::from(end[0]), f64::from(end[1])) - f.f_min;
    let mut rows = Vec::new();
    let mut kept = Vec::new();
    for (label, o) in function_optimizers() {
        let sweep = functions::run(ctx, f, &*o, &config.learning_rates, batch)?;
        // Sooner is better among starts that end converged; the rest rank after, by their gap.
        let score = |r: &FunctionRun| -> Vec<f64> {
            r.ends
                .iter()
                .zip(&r.hits)
                .map(|(e, &h)| {
                    let g = gap(e);
                    if g < f64::from(config.threshold) && h != u32::MAX {
                        f64::from(h)
                    } else {
                        f64::from(config.steps) + 1.0 + g
                    }
                })
                .collect()
        };
        let lr = sweep[best_block(&sweep, score)].lr;
        let run = functions::run(ctx, f, &*o, &[lr], batch)?.remove(0);
        let end = run.ends[0];
        let converged: Vec<u32> = run
            .ends
            .iter()
            .zip(&run.hits)
            .filter(|(e, h)| **h != u32::MAX && gap(e) < f64::from(config.threshold))
            .map(|(_, &h)| h)
            .collect();
        let mut sorted = converged.clone();
        sorted.sort_unstable();
        rows.push(FunctionRow {
            optimizer: label.clone(),
            problem: f.name,
            lr,
            steps_to_threshold: (run.hits[0] != u32::MAX && gap(&end) < f64::from(config.threshold))
                .then_some(run.hits[0]),
            final_gap: gap(&end),
            distance: f.distance_to_minimum(f64::from(end[0]), f64::from(end[1])),
            success: run.ends.iter().filter(|e| f.distance_to_minimum(f64::from(e[0]), f64::from(e[1])) < 0.01).count()
                as f64
                / run.ends.len() as f64,
            median_steps: sorted.get(sorted.len() / 2).copied(),
            seconds: run.seconds,
        });
        kept.push((label, run));
    }
    Ok((rows, kept))
}

/// How a model row is trained.
enum Trainer {
    /// One optimizer over the flat parameter vector.
    Flat(Box<dyn Optimizer>),
    /// Adafactor at its own relative step.
    Adafactor,
    /// Muon on the MLP's weight matrices, AdamW on its biases.
    Muon,
}

/// Every optimizer, Adafactor, and (on the MLP) Muon with AdamW on `model`: a learning-rate
/// sweep, keeping the lowest final loss.
pub fn model_rows(ctx: &GpuContext, model: &Model, config: &DemoConfig) -> Result<(Vec<ModelRow>, Labelled<ModelRun>)> {
    let training = Training { steps: config.model_steps, warmup_cosine: config.warmup_cosine, clip: config.clip };
    let threshold = model_threshold(model);
    // Each optimizer over the flat parameters; Adafactor; on the MLP, Muon on its weight
    // matrices with AdamW on its biases.
    let mut entries: Vec<(String, Trainer)> = optimizers().into_iter().map(|(l, o)| (l, Trainer::Flat(o))).collect();
    entries.push(("Adafactor".into(), Trainer::Adafactor));
    if model.hidden > 0 {
        entries.push(("Muon + AdamW".into(), Trainer::Muon));
    }
    let mut rows = Vec::new();
    let mut kept = Vec::new();
    for (label, trainer) in entries {
        let sweep = config
            .learning_rates
            .iter()
            .map(|&lr| match &trainer {
                Trainer::Flat(o) => models::train(ctx, model, Some(&**o), lr, training),
                Trainer::Adafactor => models::train(ctx, model, None, lr, training),
                Trainer::Muon => models::train_muon(ctx, model, lr, training),
            })
            .collect::<Result<Vec<_>>>()?;
        let run = sweep
            .into_iter()
            .min_by(|a, b| {
                let last = |r: &ModelRun| r.history.last().map_or(f64::INFINITY, |h| f64::from(h[0]));
                let (a, b) = (last(a), last(b));
                let key = |v: f64| if v.is_finite() { v } else { f64::INFINITY };
                key(a).total_cmp(&key(b))
            })
            .ok_or_else(|| crate::error::Error::Demo("no learning rates to sweep".into()))?;
        let last = run.history.last().copied().unwrap_or([f32::NAN, 0.0]);
        rows.push(ModelRow {
            optimizer: label.clone(),
            model: model.name,
            lr: run.lr,
            steps_to_threshold: run.history.iter().position(|h| h[0] < threshold).map(|t| t as u32),
            final_loss: last[0],
            accuracy: (model.name == "mlp").then_some(last[1]),
            seconds: run.seconds,
        });
        kept.push((label, run));
    }
    Ok((rows, kept))
}

/// Runs everything, calling `progress` with what it starts next.
pub fn run_all(ctx: &GpuContext, config: &DemoConfig, progress: &dyn Fn(&str)) -> Result<Report> {
    let mut report = Report {
        functions: Vec::new(),
        models: Vec::new(),
        function_runs: Vec::new(),
        model_runs: Vec::new(),
        precision: Vec::new(),
    };
    for f in &FUNCTIONS {
        progress(f.name);
        let (rows, runs) = function_rows(ctx, f, config)?;
        report.functions.extend(rows);
        report.function_runs.push((*f, runs));
    }
    for model in [Model::linear_regression(config.seed), Model::mlp(config.seed)] {
        progress(model.name);
        let (rows, runs) = model_rows(ctx, &model, config)?;
        report.models.extend(rows);
        report.model_runs.push((model, runs));
    }
    progress("mixed precision");
    let models = [Model::linear_regression(config.seed), Model::wide_mlp(config.seed)];
    let (modes, lrs) = (super::precision::COMPARED, super::precision::LEARNING_RATES);
    report.precision = super::precision::precision_rows(ctx, &models, &modes, config.model_steps, &lrs)?;
    Ok(report)
}

impl Report {
    /// Writes the pictures and the tables into `dir`; returns the files written.
    pub fn write(&self, dir: &std::path::Path, config: &DemoConfig) -> Result<Vec<std::path::PathBuf>> {
        let io = |e: std::io::Error| crate::error::Error::Demo(format!("writing into {}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut files = Vec::new();
        for (f, runs) in &self.function_runs {
            let path = dir.join(format!("function-{}.png", f.name));
            plot::function_figure(&path, f, runs)?;
            files.push(path);
        }
        let path = dir.join("models-loss.png");
        plot::model_losses(&path, &self.model_runs.iter().map(|(m, r)| (m, r.clone())).collect::<Vec<_>>())?;
        files.push(path);
        if let Some((model, runs)) = self.model_runs.iter().find(|(m, _)| m.name == "mlp") {
            let path = dir.join("mlp-regions.png");
            plot::decision_regions(&path, model, runs)?;
            files.push(path);
        }
        let markdown = format!(
            "{}\n{}",
            table::functions_markdown(&self.functions, config.threshold, config.steps, config.starts),
            table::models_markdown(&self.models, config.model_steps)
        );
        let path = dir.join("convergence.md");
        std::fs::write(&path, markdown).map_err(io)?;
        files.push(path);
        let path = dir.join("precision.md");
        let intro = format!(
            "AdamW, {} steps (full batch), in each mode at the learning rate with f32's lowest final loss of {:?}; \
             the final loss against f32's, the training accuracy (the MLP), GPU bytes per parameter.\n\n",
            config.model_steps,
            super::precision::LEARNING_RATES
        );
        std::fs::write(&path, intro + &super::precision::markdown(&self.precision)).map_err(io)?;
        files.push(path);
        let path = dir.join("convergence.json");
        let json = serde_json::to_string_pretty(&table::json(&self.functions, &self.models))
            .map_err(|e| crate::error::Error::Demo(e.to_string()))?;
        std::fs::write(&path, json).map_err(io)?;
        files.push(path);
        Ok(files)
    }
}
