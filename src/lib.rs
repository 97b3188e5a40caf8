//! # wgpu-optim
//!
//! Fused neural-network optimizer steps (SGD, Adam, AdamW, NAdam, RAdam, Adagrad, RMSprop,
//! Adamax, Adadelta, AdaBelief, Lion, Adafactor) as WGSL compute shaders through wgpu, so they
//! run on any GPU wgpu reaches (Vulkan, Metal, DX12, WebGPU) — with a CPU implementation of
//! every optimizer that is both the reference the GPU is tested against and the baseline it
//! is benchmarked against.
//!
//! Numerics follow `torch.optim`'s single-tensor code: the same update order, the same
//! host-side f64 scalars rounded once to f32, fused multiply-adds where torch's vectorised
//! CPU kernels use them. Each step reads `p`, `g` and the state once and writes `p` and the
//! state once: one pass over memory.
//!
//! ```
//! use wgpu_optim::{AdamW, CpuOptimizer, GpuContext, GpuOptimizer};
//!
//! # fn main() -> Result<(), wgpu_optim::Error> {
//! let ctx = GpuContext::new()?; // the best adapter; WGPU_ADAPTER_NAME / WGPU_BACKEND select
//! let params = vec![1.0f32, -2.0, 3.0, 0.5, 0.25];
//! let grads = vec![0.1f32, 0.2, -0.3, 0.0, 1.0];
//! let config = AdamW::new(1e-2).with_weight_decay(0.1);
//!
//! let mut gpu = GpuOptimizer::new(&ctx, config.clone(), &params)?;
//! let mut cpu = CpuOptimizer::new(config, &params)?;
//! for _ in 0..3 {
//!     gpu.step(&grads)?;
//!     cpu.step(&grads)?;
//! }
//! let on_gpu = gpu.read_params()?; // an ndarray::Array1<f32>
//! for (a, b) in on_gpu.iter().zip(cpu.params()) {
//!     assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0));
//! }
//! assert_eq!(gpu.read_state("exp_avg")?.len(), params.len());
//! # Ok(())
//! # }
//! ```
//!
//! Parameters that already live on the GPU are wrapped without a copy
//! ([`GpuTensor::from_buffer`], [`GpuOptimizer::from_tensors`]); steps can be recorded into
//! the caller's own command encoder ([`GpuOptimizer::record`]), many per submit.

#![warn(missing_docs)]

pub mod checkpoint;
pub mod clip;
pub mod cpu;
mod engine;
pub mod error;
mod factored;
pub mod format;
pub mod gpu;
pub mod gpu_optimizer;
pub mod groups;
pub mod monitor;
mod newton_schulz;
pub mod optim;
pub mod precision;
pub mod quant;
mod reduction;
pub mod schedule;
mod shaped;
mod simd;
mod sparse;
pub mod step;
pub mod tensor;
mod train_mode;
pub mod tuning;

pub use clip::{GradControl, NormType, ScalerGrowth};
pub use cpu::{CpuOptimizer, Threads};
pub use error::{Error, Result};
pub use format::{ElementFormat, HostTensor};
pub use gpu::{AdapterRequest, GpuContext};
pub use gpu_optimizer::{GpuOptimizer, SCALAR_SLOTS};
pub use groups::{ParamGroup, ParamGroups};
pub use monitor::TensorHealth;
pub use optim::{
    AdaBelief, Adadelta, Adafactor, Adagrad, Adam, AdamW, AdamWScheduleFree, Adamax, Adan, AdjustLr, Factoring, Lamb,
    Lars, Lion, Muon, NAdam, NsPrecision, Optimizer, RAdam, RmsProp, RowRule, Sgd, SgdScheduleFree, SparseAdam,
    SparseSgd, muon_with_adamw,
};
pub use precision::Precision;
pub use sparse::{CpuRows, GpuRows, ROW_STEP_SLOTS};
pub use tensor::{GpuTensor, HostData, Segment};
pub use tuning::{SavedTuning, ScalarBinding, Tuning};
