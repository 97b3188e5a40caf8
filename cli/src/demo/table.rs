//! The convergence table: per optimizer and problem, the learning rate the sweep kept, steps
//! to reach the threshold, final loss, distance to the nearest known minimum, and wall time.

use serde_json::json;

/// One optimizer on one test function.
#[derive(Clone, Debug, PartialEq)]
pub struct FunctionRow {
    /// Optimizer label.
    pub optimizer: String,
    /// Test function.
    pub problem: &'static str,
    /// The learning rate kept.
    pub lr: f64,
    /// From the classic start: steps until f - f_min < threshold (`None`: not within the run).
    pub steps_to_threshold: Option<u32>,
    /// From the classic start: f - f_min at the end.
    pub final_gap: f64,
    /// From the classic start: distance from the end to the nearest minimum.
    pub distance: f64,
    /// Fraction of all starts that ended within 0.01 of a minimum.
    pub success: f64,
    /// Median over the starts that reached the threshold of their steps.
    pub median_steps: Option<u32>,
    /// Wall time of the kept learning rate's batch (every start), seconds.
    pub seconds: f64,
}

/// One optimizer on one model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelRow {
    /// Optimizer label.
    pub optimizer: String,
    /// Model.
    pub model: &'static str,
    /// The learning rate kept.
    pub lr: f64,
    /// Steps until the loss fell below the model's threshold.
    pub steps_to_threshold: Option<u32>,
    /// Loss after the last step.
    pub final_loss: f32,
    /// Training accuracy after the last step (classifiers).
    pub accuracy: Option<f32>,
    /// Wall time, seconds.
    pub seconds: f64,
}

fn steps(s: Option<u32>) -> String {
    s.map_or("—".into(), |s| s.to_string())
}

/// The test-function table as markdown.
pub fn functions_markdown(rows: &[FunctionRow], threshold: f32, steps_run: u32, starts: usize) -> String {
    let mut s = format!(
        "| problem | optimizer | lr | steps to f − f* < {threshold:e} | final f − f* | distance to min | \
         starts within 0.01 of a min (of {starts}) | median steps | wall s ({steps_run} steps) |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for r in rows {
        s += &format!(
            "| {} | {} | {:e} | {} | {:.2e} | {:.2e} | {:.0} % | {} | {:.2} |\n",
            r.problem,
            r.optimizer,
            r.lr,
            steps(r.steps_to_threshold),
            r.final_gap,
            r.distance,
            100.0 * r.success,
            steps(r.median_steps),
            r.seconds
        );
    }
    s
}

/// The model table as markdown.
pub fn models_markdown(rows: &[ModelRow], steps_run: u32) -> String {
    let mut s = format!(
        "| model | optimizer | lr | steps to threshold | final loss | accuracy | wall s ({steps_run} steps) |\n\
         |---|---|---:|---:|---:|---:|---:|\n"
    );
    for r in rows {
        s += &format!(
            "| {} | {} | {:e} | {} | {:.3e} | {} | {:.2} |\n",
            r.model,
            r.optimizer,
            r.lr,
            steps(r.steps_to_threshold),
            r.final_loss,
            r.accuracy.map_or("—".into(), |a| format!("{:.1} %", 100.0 * a)),
            r.seconds
        );
    }
    s
}

/// Both tables as JSON.
pub fn json(functions: &[FunctionRow], models: &[ModelRow]) -> serde_json::Value {
    json!({
        "functions": functions.iter().map(|r| json!({
            "problem": r.problem, "optimizer": r.optimizer, "lr": r.lr,
            "steps_to_threshold": r.steps_to_threshold, "final_gap": r.final_gap, "distance": r.distance,
            "success": r.success, "median_steps": r.median_steps, "seconds": r.seconds,
        })).collect::<Vec<_>>(),
        "models": models.iter().map(|r| json!({
            "model": r.model, "optimizer": r.optimizer, "lr": r.lr,
            "steps_to_threshold": r.steps_to_threshold, "final_loss": r.final_loss,
            "accuracy": r.accuracy, "seconds": r.seconds,
        })).collect::<Vec<_>>(),
    })
}
