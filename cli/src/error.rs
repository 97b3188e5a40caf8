//! The command's errors: the library's, and what only the benchmark and the demo can meet.

/// A failure of the benchmark, the check or the demo.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The library refused or failed (see [`wgpu_optim::Error`]).
    #[error(transparent)]
    Optim(#[from] wgpu_optim::Error),

    /// The GPU's result disagrees with the CPU reference beyond the error budget (the
    /// benchmark's guard: no speed is reported for a wrong result).
    #[error("the GPU result is wrong: {0}")]
    ResultMismatch(String),

    /// A benchmark argument is outside what the benchmark supports (the message says what
    /// would do).
    #[error("bench: {0}")]
    BenchArgument(String),

    /// A demo argument is outside what the demo supports (the message says what would do).
    #[error("demo: {0}")]
    DemoArgument(String),

    /// The demo could not draw or write its pictures and tables.
    #[error("demo: {0}")]
    Demo(String),
}

/// Shorthand used throughout the command.
pub type Result<T, E = Error> = std::result::Result<T, E>;
