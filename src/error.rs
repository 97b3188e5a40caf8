//! One error type for everything a user can cause.

/// Every failure a user of this crate can cause, each with a message that says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No GPU adapter matched the request (or none exists on this machine).
    #[error("no GPU adapter found{detail}. {advice}")]
    NoAdapter {
        /// What was asked for, e.g. ` named "rtx"`.
        detail: String,
        /// What to do, for the backends asked for.
        advice: String,
    },

    /// The adapter refused to create a device.
    #[error("the adapter refused to create a device: {0}")]
    RequestDevice(String),

    /// A hyper-parameter is outside its valid range. The message follows torch.optim's wording.
    #[error("{optimizer}: {message}")]
    InvalidHyperParameter {
        /// Optimizer name, e.g. `"AdamW"`.
        optimizer: &'static str,
        /// torch.optim's message, e.g. `Invalid learning rate: -1`.
        message: String,
    },

    /// Two arrays that must have the same length do not.
    #[error("{what}: expected {expected} elements, got {actual}")]
    LengthMismatch {
        /// Which argument.
        what: &'static str,
        /// The length it must have.
        expected: usize,
        /// The length it has.
        actual: usize,
    },

    /// A tensor has no elements; an optimizer step over nothing is almost certainly a bug.
    #[error("{what} is empty: a tensor needs at least one element")]
    Empty {
        /// Which argument.
        what: &'static str,
    },

    /// A buffer handed in by the user lacks a usage flag the step needs.
    #[error("{what}: the buffer lacks usage {names}; create it with `wgpu::BufferUsages::{names}` added", names = usage_names(*missing))]
    MissingUsage {
        /// Which argument.
        what: &'static str,
        /// The usages it lacks.
        missing: wgpu::BufferUsages,
    },

    /// A user buffer is too small for the range asked of it, or an offset is misaligned.
    #[error("{what}: {message}")]
    BadBufferRange {
        /// Which argument.
        what: &'static str,
        /// What is wrong and what would be right.
        message: String,
    },

    /// No state tensor of that name: the optimizer's own are listed.
    #[error(
        "{optimizer} keeps no state named {name:?}; it keeps {available:?} (torch's names; the role names work too)"
    )]
    UnknownState {
        /// The optimizer (`"AdamW"`).
        optimizer: &'static str,
        /// The name asked for.
        name: String,
        /// The torch names of the state it keeps.
        available: Vec<&'static str>,
    },

    /// A new configuration cannot take over the optimizer's state (another family, or
    /// another set of state tensors); the message says what differs.
    #[error("reconfigure: {0}; create a new optimizer instead")]
    Reconfigure(String),

    /// Host data that must be one contiguous run of f32 values is not.
    #[error("{what}: not contiguous; pass `a.as_standard_layout()` (or a slice)")]
    NotContiguous {
        /// Which argument.
        what: &'static str,
    },

    /// A buffer handed in by the user belongs to another device than the context's.
    #[error(
        "{what}: the buffer belongs to another wgpu device; create the GpuContext from that \
         device (GpuContext::from_device) or the buffer on this one"
    )]
    ForeignDevice {
        /// Which argument.
        what: &'static str,
    },

    /// Tensors that one step binds together are split into different sub-ranges.
    #[error(
        "{what} is split into sub-ranges of {actual:?} elements but the parameters use {expected:?}; \
         create every tensor of one optimizer through the same GpuContext"
    )]
    LayoutMismatch {
        /// Which argument.
        what: &'static str,
        /// The parameters' sub-range lengths.
        expected: Vec<usize>,
        /// This tensor's sub-range lengths.
        actual: Vec<usize>,
    },

    /// A size is beyond what this device can do.
    #[error("{0}")]
    OverLimit(String),

    /// Two bound tensors share memory where a step would update one while reading or
    /// updating the other: a parameter tensor given twice, or overlapping a gradient.
    #[error(
        "{first} and {second} share bytes {start}..{end} of one buffer: a parameter may be bound once and \
         never overlap a gradient (torch refuses a parameter in two groups); give each its own memory"
    )]
    Aliased {
        /// The tensor bound first.
        first: String,
        /// The tensor that overlaps it.
        second: String,
        /// The shared byte range.
        start: u64,
        /// End of the shared byte range.
        end: u64,
    },

    /// The device was lost (destroyed, reset or removed): nothing more runs on it.
    #[error("the GPU device was lost ({reason}): create a new GpuContext and load the last checkpoint")]
    DeviceLost {
        /// wgpu's reason and message, or the caller's.
        reason: String,
    },

    /// A parameter group index past the last group.
    #[error("param group {index} does not exist: there are {groups} groups (0..{groups})")]
    NoSuchGroup {
        /// The index given.
        index: usize,
        /// How many groups there are.
        groups: usize,
    },

    /// The optimizer's step uses something this build cannot run yet (a stage kind, say).
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// A call the optimizer's mode refuses: a step of a schedule-free optimizer in eval mode
    /// (call `train()` first), a checkpoint saved in train mode (call `eval()` first).
    #[error("{0}")]
    WrongMode(String),

    /// An engine tuning value is unusable.
    #[error("invalid tuning: {0}")]
    InvalidTuning(String),

    /// Steps were not taken: recorded with skip-on-inf, they found their per-step scalars
    /// overwritten, because more steps were skipped since the last sync than the step table
    /// holds; or a recorded step never ran (its encoder was not submitted), and the step after
    /// it found the step counter older than it should be.
    #[error(
        "steps were not taken: more than 256 were skipped since the host last synced its step count, \
         or a recorded step never ran (an encoder or pass recorded into was not submitted); the GPU has \
         taken {taken}. Call sync() more often, and submit everything recorded. Later steps run normally."
    )]
    StaleSteps {
        /// Steps the GPU has taken.
        taken: u64,
    },

    /// A saved tuning (`wgpu-optim tune --save`) is unreadable, or of another adapter.
    #[error("tuning file {path}: {message}")]
    TuningFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },

    /// A checkpoint file is unreadable, corrupt, of another optimizer, shape or version.
    /// The optimizer it was to be loaded into is unchanged.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },

    /// The device ran out of memory (allocating tensors, state or scratch buffers).
    #[error("out of memory during {during}: {message}; use fewer or smaller tensors, or free other buffers")]
    OutOfMemory {
        /// What the crate was doing.
        during: &'static str,
        /// wgpu's own message.
        message: String,
    },

    /// wgpu reported a validation error for work this crate submitted.
    #[error("wgpu error during {during}: {message}")]
    Wgpu {
        /// What the crate was doing.
        during: &'static str,
        /// wgpu's own message.
        message: String,
    },

    /// Reading a buffer back to the host failed (device lost, or buffer not mappable).
    #[error("reading back from the GPU failed: {0}")]
    Readback(String),
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Usage flags by their names, `COPY_SRC | STORAGE`.
fn usage_names(usages: wgpu::BufferUsages) -> String {
    usages.iter_names().map(|(name, _)| name).collect::<Vec<_>>().join(" | ")
}
