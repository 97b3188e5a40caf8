//! The `wgpu-optim` command's library: the benchmark (GPU against the CPU, each against its
//! own memory roof measured in the same run) and the convergence demo. It uses
//! [`wgpu_optim`] as any other crate would; nothing here is part of that library.

#![warn(missing_docs)]

pub mod bench;
pub mod demo;
pub mod error;

pub use error::{Error, Result};
