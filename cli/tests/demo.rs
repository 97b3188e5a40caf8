//! The convergence demo: the optimizers reach the test functions' known minima, the MLP
//! learns its mixture, the GPU's analytic gradients match the formulas, and the pictures and
//! tables are written with their stated sizes.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::*;
use wgpu_optim::{Adam, Adamax, Optimizer, Sgd};
use wgpu_optim_cli::demo::{self, Batch, DemoConfig, FUNCTIONS, Model, Training, models};

fn quadratic() -> &'static demo::TestFunction {
    &FUNCTIONS[3]
}

#[test]
fn the_gpu_gradients_are_the_formulas_derivatives() {
    // One SGD step of lr 1 moves each start by -∇f: compare with central differences of the
    // f64 formula the tables and pictures use.
    let ctx = ctx();
    for f in &FUNCTIONS {
        let batch = Batch { starts: 32, steps: 1, threshold: 1e-4, seed: 7 };
        let run = demo::functions::run(&ctx, f, &Sgd::new(1e-3), &[1e-3], batch).unwrap().remove(0);
        for (start, end) in f.starts(32, 7).iter().zip(&run.ends) {
            let (x, y) = (f64::from(start[0]), f64::from(start[1]));
            let h = 1e-6;
            let gx = (f.value(x + h, y) - f.value(x - h, y)) / (2.0 * h);
            let gy = (f.value(x, y + h) - f.value(x, y - h)) / (2.0 * h);
            let moved = [(x - f64::from(end[0])) / 1e-3, (y - f64::from(end[1])) / 1e-3];
            for (got, want) in moved.iter().zip([gx, gy]) {
                // f32 gradient, and the step's f32 rounding divided by the lr.
                let tolerance =
                    1e-4 * want.abs().max(1.0) + 1e3 * f64::from(f32::EPSILON) * x.abs().max(y.abs()).max(1.0);
                assert!((got - want).abs() <= tolerance, "{}: at ({x}, {y}) gradient {got} vs {want}", f.name);
            }
        }
        // The recorded path starts at the classic start, with its value.
        let first = run.path[0];
        assert_eq!([first[0], first[1]], f.start.map(|v| v as f32));
        let want = f.value(f.start[0], f.start[1]);
        assert!((f64::from(first[2]) - want).abs() <= 1e-5 * want.abs().max(1.0), "{}", f.name);
    }
}

#[test]
fn every_optimizer_reaches_the_quadratics_minimum() {
    // Tolerance: the end of the classic start's path within 0.05 of the minimum after 2000
    // steps at the learning rate the sweep keeps, for every optimizer.
    let ctx = ctx();
    let config = DemoConfig { starts: 32, steps: 2000, ..Default::default() };
    let (rows, _) = demo::function_rows(&ctx, quadratic(), &config).unwrap();
    assert_eq!(rows.len(), demo::function_optimizers().len());
    for r in &rows {
        assert!(r.distance < 0.05, "{} at lr {}: distance {} after 2000 steps", r.optimizer, r.lr, r.distance);
    }
}

#[test]
fn adam_family_and_momentum_reach_rosenbrocks_minimum() {
    // From (-1.2, 1): within 0.01 of (1, 1) in the stated steps at the stated learning rate.
    let ctx = ctx();
    let rosenbrock = &FUNCTIONS[0];
    // (AdamW's default decoupled decay moves its fixed point off (1, 1); RAdam and AdaBelief's
    // un-rectified first steps diverge there at the learning rates that would be fast.)
    let cases: [(&str, Box<dyn Optimizer>, f64, u32); 4] = [
        ("Adam", Adam::default().into(), 0.1, 2000),
        ("Adamax", Adamax::default().into(), 0.1, 4000),
        ("SGD momentum 0.9", Sgd::default().with_momentum(0.9).into(), 1e-3, 2000),
        ("SGD Nesterov 0.9", Sgd::default().with_momentum(0.9).with_nesterov(true).into(), 1e-3, 2000),
    ];
    for (label, o, lr, steps) in cases {
        let batch = Batch { starts: 32, steps, threshold: 1e-4, seed: 1 };
        let run = demo::functions::run(&ctx, rosenbrock, &*o, &[lr], batch).unwrap().remove(0);
        let end = run.ends[0];
        let d = rosenbrock.distance_to_minimum(f64::from(end[0]), f64::from(end[1]));
        assert!(d < 0.01, "{label}: distance {d} after {steps} steps at lr {lr}");
    }
}

#[test]
fn the_mlp_learns_the_mixture_and_linear_regression_its_weights() {
    // 300 full-batch steps of Adam at lr 0.03: at least 95 % training accuracy (the mixture's
    // overlap leaves about 2 % to chance); also with warmup + cosine and clipping on.
    let ctx = ctx();
    let mlp = Model::mlp(42);
    for training in [
        Training { steps: 300, warmup_cosine: false, clip: None },
        Training { steps: 300, warmup_cosine: true, clip: Some(1.0) },
    ] {
        let run = models::train(&ctx, &mlp, Some(&Adam::default()), 0.03, training).unwrap();
        let [loss, accuracy] = *run.history.last().unwrap();
        assert!(accuracy >= 0.95, "{training:?}: accuracy {accuracy}, loss {loss}");
        assert!(loss < run.history[0][0] / 5.0);
    }
    // Adafactor trains the same model through its own path.
    let run = models::train(&ctx, &mlp, None, 0.1, Training { steps: 300, warmup_cosine: false, clip: None }).unwrap();
    assert!(run.history.last().unwrap()[1] >= 0.95);
    // So do Muon on its weight matrices and AdamW on its biases.
    let run = models::train_muon(&ctx, &mlp, 0.03, Training { steps: 300, warmup_cosine: false, clip: None }).unwrap();
    let [loss, accuracy] = *run.history.last().unwrap();
    assert!(accuracy >= 0.95, "Muon + AdamW: accuracy {accuracy}, loss {loss}");
    // Linear regression reaches its noise floor (σ = 0.01: loss 0.5 σ² = 5e-5).
    let run = models::train(
        &ctx,
        &Model::linear_regression(42),
        Some(&Adam::default()),
        0.1,
        Training { steps: 300, warmup_cosine: false, clip: None },
    )
    .unwrap();
    let loss = run.history.last().unwrap()[0];
    assert!(loss < 1e-4, "linear regression loss {loss}");
}

/// Width and height from a PNG's header.
fn png_size(path: &std::path::Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
    let word = |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    (word(16), word(20))
}

#[test]
fn the_demo_writes_its_pictures_and_tables() {
    let ctx = ctx();
    let config =
        DemoConfig { starts: 32, steps: 20, model_steps: 10, learning_rates: vec![1e-2, 1e-1], ..Default::default() };
    let report = demo::run_all(&ctx, &config, &|_| {}).unwrap();
    assert_eq!(report.precision.len(), 2 * demo::precision::COMPARED.len(), "every mode on both models");
    assert_eq!(report.functions.len(), FUNCTIONS.len() * demo::function_optimizers().len());
    // Every optimizer and Adafactor on both models, and Muon with AdamW on the MLP.
    assert_eq!(report.models.len(), 2 * (demo::optimizers().len() + 1) + 1);
    let dir = std::env::temp_dir().join(format!("wgpu-optim-demo-{}", std::process::id()));
    let files = report.write(&dir, &config).unwrap();
    for f in &FUNCTIONS {
        assert_eq!(png_size(&dir.join(format!("function-{}.png", f.name))), demo::plot::FUNCTION_FIGURE);
    }
    assert_eq!(png_size(&dir.join("models-loss.png")), demo::plot::MODEL_FIGURE);
    let (w, h) = png_size(&dir.join("mlp-regions.png"));
    assert_eq!((w, h), demo::plot::regions_size(demo::optimizers().len() + 2));
    let table = std::fs::read_to_string(dir.join("convergence.md")).unwrap();
    assert!(table.contains("| rosenbrock | Adam |") && table.contains("| mlp | Adafactor |"));
    assert!(table.contains("| mlp | Muon + AdamW |"), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("convergence.json")).unwrap()).unwrap();
    assert_eq!(json["functions"].as_array().unwrap().len(), report.functions.len());
    let precision = std::fs::read_to_string(dir.join("precision.md")).unwrap();
    assert!(precision.contains("| mlp-wide | bf16-sr-8bit |"), "{precision}");
    assert_eq!(files.len(), FUNCTIONS.len() + 5);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_mixed_precision_mode_trains_as_f32_does() {
    // The wide MLP (6147 parameters, so its state can be 8-bit), 100 steps of AdamW in the
    // modes that keep small updates: the training accuracy within one point of f32's (the
    // target bitsandbytes and torchao state for 8-bit optimizers), the loss within 10 %.
    use wgpu_optim_cli::demo::precision::precision_rows;
    let ctx = ctx();
    let modes = ["f32", "bf16-master", "bf16-sr", "f32-8bit", "bf16-sr-8bit"];
    let rows = precision_rows(&ctx, &[Model::wide_mlp(42)], &modes, 100, &[3e-2]).unwrap();
    let f32_row = &rows[0];
    assert_eq!(f32_row.mode, "f32");
    let f32_accuracy = f32_row.accuracy.unwrap();
    assert!(f32_accuracy > 0.9, "f32 learns the mixture: {f32_accuracy}");
    for r in &rows {
        let accuracy = r.accuracy.unwrap();
        assert!((accuracy - f32_accuracy).abs() <= 0.01, "{}: accuracy {accuracy} vs f32 {f32_accuracy}", r.mode);
        assert!(r.relative < 1.1, "{}: loss {} is {:.3} of f32's", r.mode, r.loss, r.relative);
    }
    // 8-bit moments: about 1 byte per moment element (and an absmax per 256).
    let q8 = rows.iter().find(|r| r.mode == "bf16-sr-8bit").unwrap();
    assert!(q8.memory_per_param < 6.2, "{}", q8.memory_per_param);
}
