//! The element formats and mixed-precision modes a benchmark runs a step in: what the
//! parameters, gradients and state are stored as, and the bytes a step moves and keeps per
//! parameter on each side.

use wgpu_optim::optim::Optimizer;
use wgpu_optim::{ElementFormat, Precision};

use crate::error::{Error, Result};

/// One way of storing a step's tensors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mode {
    /// The name on the command line and in the table (`bf16-master`).
    pub name: &'static str,
    /// The parameters' and gradients' format.
    pub params: ElementFormat,
    /// Every state slot's format.
    pub state: ElementFormat,
    /// How the step stores the parameters.
    pub precision: Precision,
}

const F32: ElementFormat = ElementFormat::F32;
const BF16: ElementFormat = ElementFormat::BF16;
const F16: ElementFormat = ElementFormat::F16;
const Q8: ElementFormat = ElementFormat::Blockwise8;
const NEAREST: Precision = Precision::RoundToNearest;
const SR: Precision = Precision::StochasticRounding { seed: 0x5eed };

/// Every mode, f32 first.
pub const MODES: &[Mode] = &[
    Mode { name: "f32", params: F32, state: F32, precision: NEAREST },
    Mode { name: "bf16", params: BF16, state: F32, precision: NEAREST },
    Mode { name: "bf16-master", params: BF16, state: F32, precision: Precision::MasterWeights },
    Mode { name: "bf16-sr", params: BF16, state: F32, precision: SR },
    Mode { name: "bf16-moments", params: F32, state: BF16, precision: NEAREST },
    Mode { name: "bf16-sr-bf16-moments", params: BF16, state: BF16, precision: SR },
    Mode { name: "f16", params: F16, state: F32, precision: NEAREST },
    Mode { name: "f16-master", params: F16, state: F32, precision: Precision::MasterWeights },
    Mode { name: "f32-8bit", params: F32, state: Q8, precision: NEAREST },
    Mode { name: "bf16-sr-8bit", params: BF16, state: Q8, precision: SR },
];

impl Mode {
    /// The mode named `name`, or an error listing them.
    pub fn by_name(name: &str) -> Result<&'static Mode> {
        MODES.iter().find(|m| m.name == name).ok_or_else(|| {
            let known: Vec<&str> = MODES.iter().map(|m| m.name).collect();
            Error::BenchArgument(format!("unknown --precision {name:?}; known: {}", known.join(", ")))
        })
    }

    /// `o` keeping its state in this mode's format; `Err` where it keeps f32 state only.
    pub fn optimizer(&self, o: &dyn Optimizer) -> Result<Box<dyn Optimizer>> {
        if self.state == F32 {
            return Ok(o.clone_box());
        }
        o.boxed_with_state_format(self.state).ok_or_else(|| {
            Error::BenchArgument(format!("--precision {}: {} keeps its state in f32 only", self.name, o.name()))
        })
    }

    /// Whether a step keeps f32 master weights.
    fn master(&self) -> u64 {
        u64::from(self.precision == Precision::MasterWeights)
    }

    /// Bytes one GPU step moves over tensors of `lens`: p read and written, g read, every
    /// state tensor in use read and written, each as stored (8-bit blocks with their absmax;
    /// a tensor under 4096 elements keeps f32 state); the master weights (f32) read and
    /// written. Each stage before the last of a staged optimizer (f32 only) reads p and the
    /// state once more (per parameter, f32 AdamW: 28; LAMB: 40; bf16 parameters with bf16
    /// moments: 14; bf16 with 8-bit moments: about 10.06).
    pub fn gpu_bytes(&self, o: &dyn Optimizer, lens: &[usize]) -> u64 {
        let (states, p) = (states(o), self.params.bytes());
        lens.iter()
            .map(|&n| {
                let (n64, s) = (n as u64, self.state_bytes(n));
                3 * p * n64 + 2 * states * s + 8 * self.master() * n64 + extra_stages(o) * (p * n64 + states * s)
            })
            .sum()
    }

    /// GPU memory over tensors of `lens`: parameters, gradients, state and master weights.
    pub fn gpu_memory(&self, o: &dyn Optimizer, lens: &[usize]) -> u64 {
        let p = self.params.bytes();
        lens.iter().map(|&n| (2 * p + 4 * self.master()) * n as u64 + states(o) * self.state_bytes(n)).sum()
    }

    /// Bytes one state tensor of a tensor of `n` elements keeps.
    fn state_bytes(&self, n: usize) -> u64 {
        self.state.state_bytes_of(n as u64)
    }

    /// [`gpu_bytes`](Self::gpu_bytes) per parameter of a large tensor (2^24 elements).
    pub fn gpu_bytes_per_param(&self, o: &dyn Optimizer) -> f64 {
        self.gpu_bytes(o, &[1 << 24]) as f64 / f64::from(1 << 24)
    }

    /// [`gpu_memory`](Self::gpu_memory) per parameter of a large tensor (2^24 elements).
    pub fn gpu_memory_per_param(&self, o: &dyn Optimizer) -> f64 {
        self.gpu_memory(o, &[1 << 24]) as f64 / f64::from(1 << 24)
    }

    /// Bytes one CPU step moves over tensors of `lens`: the CPU keeps every tensor as f32
    /// values of its format, so f32 traffic, and the master weights; 8-bit state once more
    /// after the update (its f32 values read and written, its blocks written).
    pub fn cpu_bytes(&self, o: &dyn Optimizer, lens: &[usize]) -> u64 {
        let f32_traffic = Mode { params: F32, state: F32, ..*self }.gpu_bytes(o, lens);
        let quantized: usize = match self.state {
            Q8 => lens.iter().filter(|&&n| n >= wgpu_optim::quant::MIN_QUANTIZED_LEN).sum(),
            _ => 0,
        };
        f32_traffic + states(o) * (8 * quantized as u64 + Q8.bytes_of(quantized as u64))
    }

    /// Tensors besides the gradient that a CPU step reads and writes: the parameters, the
    /// state in use and the master weights (the CPU roof's pass touches as many).
    pub fn cpu_tensors(&self, o: &dyn Optimizer) -> usize {
        (1 + states(o) + self.master()) as usize
    }

    /// What a stored value may differ by per step between two sides, relative to it: half a
    /// unit in the last place of a 16-bit format (2^-8 for bf16, 2^-11 for f16; 0 for f32)
    /// where a value within rounding of a tie rounds either way on sides whose f32
    /// arithmetic differs; a whole unit under stochastic rounding, whose random bits follow
    /// an element's index in its optimizer (the CPU side's per tensor, the GPU arena's with
    /// its gaps). 8-bit state: a value may land one code of the dynamic map apart (the map's
    /// gaps are at most 0.9/64 < 2^-6 of the block's absmax, which the state's largest value,
    /// and so its change from zero, bounds), and a parameter's update with it. For the
    /// parameters, and for the state.
    pub fn units(&self) -> (f64, f64) {
        let stochastic = matches!(self.precision, Precision::StochasticRounding { .. });
        let param = unit(self.params) * if stochastic { 2.0 } else { 1.0 };
        let state = unit(self.state);
        (param.max(state), state)
    }
}

fn unit(f: ElementFormat) -> f64 {
    match f {
        ElementFormat::BF16 => 2f64.powi(-8),
        ElementFormat::F16 => 2f64.powi(-11),
        ElementFormat::Blockwise8 => 2f64.powi(-6),
        _ => 0.0,
    }
}

fn states(o: &dyn Optimizer) -> u64 {
    (0..o.kernel().state.len()).filter(|&i| o.uses_state(i)).count() as u64
}

fn extra_stages(o: &dyn Optimizer) -> u64 {
    o.kernel().stages.len() as u64 - 1
}
