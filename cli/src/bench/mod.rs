//! Honest throughput measurement: the same optimizer step on the GPU and on the CPU
//! (sequential reference and parallel baseline), each reported as GB/s against that side's
//! own memory roof measured in the same run, and only after the GPU result has been checked
//! against the CPU.

mod check;
mod modes;
mod roof;
mod run;
mod sets;
pub mod timing;

pub use check::{Agreement, agreement, max_change, worst_error};
pub use modes::{MODES, Mode};
pub use roof::{CpuPass, GpuCopy};
pub use run::{Clock, GpuClock, GpuWorkload, Storage, Workload, state_bytes};
pub use sets::{MODEL_SETS, TensorSet, gpt2_shapes};

use wgpu_optim::optim::Optimizer;

/// Bytes one step moves per parameter with every tensor f32 (AdamW: 7 × 4 = 28; see
/// [`Mode::gpu_bytes_per_param`]).
pub fn bytes_per_param(o: &dyn Optimizer) -> u64 {
    MODES[0].gpu_bytes(o, &[1])
}

/// Which implementation a measurement is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The WGSL kernels on the adapter, the tensors slices of one arena.
    Gpu,
    /// The WGSL kernels on the adapter, each tensor its own buffer.
    GpuBuffers,
    /// The CPU reference, one thread.
    CpuSequential,
    /// The CPU baseline on all threads of the rayon pool.
    CpuParallel,
}

impl Side {
    /// Table label.
    pub fn label(self) -> &'static str {
        match self {
            Side::Gpu => "GPU",
            Side::GpuBuffers => "GPU, buffer per tensor",
            Side::CpuSequential => "CPU sequential",
            Side::CpuParallel => "CPU parallel",
        }
    }
}

/// One measured configuration: the step and its roof taken in turn, medians of each.
#[derive(Clone, Debug)]
pub struct Measurement {
    /// Optimizer name.
    pub optimizer: String,
    /// How the tensors are stored ([`Mode::name`]).
    pub precision: String,
    /// The tensors (`2^20`, `gpt2`).
    pub workload: String,
    /// Number of tensors.
    pub tensors: usize,
    /// Parameters per step.
    pub params: usize,
    /// Implementation.
    pub side: Side,
    /// Median seconds per step over the samples.
    pub seconds_per_step: f64,
    /// First and third quartiles of the seconds per step.
    pub quartiles: (f64, f64),
    /// The process's CPU seconds per step while the step was timed (all threads), where the
    /// system says.
    pub cpu_seconds_per_step: Option<f64>,
    /// Bytes moved per step.
    pub bytes_per_step: u64,
    /// This side's roof for this traffic, bytes/s (read + write): the median of its samples,
    /// taken in turn with the step's.
    pub roof_bytes_per_second: f64,
}

impl Measurement {
    /// Achieved bandwidth, GB/s (10^9 bytes).
    pub fn gb_per_second(&self) -> f64 {
        self.bytes_per_step as f64 / self.seconds_per_step / 1e9
    }
    /// Fraction of this side's roof (medians of samples taken in turn).
    pub fn roof_fraction(&self) -> f64 {
        self.bytes_per_step as f64 / self.seconds_per_step / self.roof_bytes_per_second
    }
    /// Parameters updated per second.
    pub fn params_per_second(&self) -> f64 {
        self.params as f64 / self.seconds_per_step
    }
}

/// Deterministic, varied inputs for benchmarking: parameters in [-2, 2), gradients in [-1, 1).
pub fn inputs(n: usize) -> (Vec<f32>, Vec<f32>) {
    let hash = |i: usize, salt: u64| {
        let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt;
        x ^= x >> 31;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 29;
        (x >> 40) as f32 / (1u64 << 24) as f32 // [0, 1)
    };
    ((0..n).map(|i| 4.0 * hash(i, 1) - 2.0).collect(), (0..n).map(|i| 2.0 * hash(i, 2) - 1.0).collect())
}

/// The columns of a measurement table (terminal and markdown alike).
pub const COLUMNS: [&str; 12] = [
    "optimizer",
    "precision",
    "tensors",
    "params",
    "side",
    "ms/step",
    "IQR ms",
    "CPU ms/step",
    "Gparam/s",
    "GB/s",
    "roof GB/s",
    "% of roof",
];

impl Measurement {
    /// This measurement's row of the table, under [`COLUMNS`].
    pub fn cells(&self) -> [String; 12] {
        let (q1, q3) = self.quartiles;
        [
            self.optimizer.clone(),
            self.precision.clone(),
            self.workload.clone(),
            self.params.to_string(),
            self.side.label().to_string(),
            format!("{:.3}", self.seconds_per_step * 1e3),
            format!("{:.3}–{:.3}", q1 * 1e3, q3 * 1e3),
            self.cpu_seconds_per_step.map_or("–".into(), |c| format!("{:.3}", c * 1e3)),
            format!("{:.3}", self.params_per_second() / 1e9),
            format!("{:.1}", self.gb_per_second()),
            format!("{:.1}", self.roof_bytes_per_second / 1e9),
            format!("{:.0} %{}", 100.0 * self.roof_fraction(), if self.roof_fraction() > 1.0 { " *" } else { "" }),
        ]
    }
}

/// Said under a table with a row above its roof (marked `*`).
pub const ABOVE_ROOF: &str = "* faster than its roof: the medians of samples taken in turn, so not from load on the \
    machine; the roof kernel (p += g) is no upper bound at this size (caches)";

/// A markdown table of measurements.
pub fn markdown(rows: &[Measurement]) -> String {
    let mut s = format!("| {} |\n|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|\n", COLUMNS.join(" | "));
    for m in rows {
        s += &format!("| {} |\n", m.cells().join(" | "));
    }
    s
}

/// Measurements as JSON (an array of objects).
pub fn json(rows: &[Measurement]) -> serde_json::Value {
    serde_json::Value::Array(
        rows.iter()
            .map(|m| {
                serde_json::json!({
                    "optimizer": m.optimizer,
                    "precision": m.precision,
                    "workload": m.workload,
                    "tensors": m.tensors,
                    "params": m.params,
                    "side": m.side.label(),
                    "seconds_per_step": m.seconds_per_step,
                    "seconds_per_step_quartiles": [m.quartiles.0, m.quartiles.1],
                    "cpu_seconds_per_step": m.cpu_seconds_per_step,
                    "bytes_per_step": m.bytes_per_step,
                    "gb_per_second": m.gb_per_second(),
                    "roof_gb_per_second": m.roof_bytes_per_second / 1e9,
                    "roof_fraction": m.roof_fraction(),
                })
            })
            .collect(),
    )
}
