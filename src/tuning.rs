//! How the engine splits work and compiles its kernels ([`Tuning`]): defaults derived from
//! the device's limits, what was measured on each adapter family, and a tuning saved by
//! `wgpu-optim tune --save` loaded back ([`SavedTuning`]).

use std::path::Path;

use crate::error::{Error, Result};

/// How the engine splits work and memory. Every field has a measured or device-derived
/// default ([`GpuContext::tuning`](crate::GpuContext::tuning)); lower them in tests to exercise the multi-range paths on
/// small data.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tuning {
    /// Invocations per workgroup (a WGSL `override`). Default 256.
    pub workgroup_size: u32,
    /// Elements (vec4s) each invocation of an element-wise kernel updates, a workgroup
    /// apart (a WGSL `override`): amortises the read of the step's scalars. Default 4.
    pub items_per_invocation: u32,
    /// Fewest workgroups an element-wise step's dispatch should have: a sub-range that would
    /// get fewer at `items_per_invocation` is dispatched with half as many items per
    /// invocation, and half again, down to 1 (so a small tensor is spread over the device).
    /// Default 1 (items never lowered); lavapipe: the host's threads.
    pub min_workgroups: u32,
    /// Largest number of workgroups in one grid dimension; larger dispatches fold into y.
    /// Default: the device's `max_compute_workgroups_per_dimension` (65535 on every backend).
    pub max_workgroups_per_dimension: u32,
    /// Bytes of one bound sub-range of an f32 tensor: every tensor is processed as
    /// consecutive sub-ranges of `segment_bytes / 4` elements (the last one shorter), a 16-bit
    /// tensor's in half the bytes, so that f32 state or master weights laid out like it fit a
    /// binding too. A multiple of 32 bytes and of twice the device's storage offset alignment
    /// (a 16-bit tensor's sub-ranges then start aligned as well), at most
    /// `max_storage_buffer_binding_size`.
    pub segment_bytes: u64,
    /// Size cap of one physical buffer this crate allocates; larger tensors are spread over
    /// several buffers. Default 512 MiB: on an H100 (Vulkan), 1 GiB buffers ran an AdamW
    /// step at half the speed of 512 MiB ones however they were bound.
    pub buffer_bytes: u64,
    /// Where the step kernels read each step's scalars from (see [`ScalarBinding`]).
    pub scalars: ScalarBinding,
    /// Whether the element-wise step kernels are compiled with wgpu's runtime checks
    /// (bounds checks on every buffer access, loop bounding). Every access of those kernels
    /// is in range by construction — each index is below `arrayLength(&p)` and every tensor of
    /// a dispatch is bound with `p`'s length; the table is indexed modulo its own length — so
    /// `false` (the default) compiles them with `create_shader_module_trusted` and no checks:
    /// where a backend has no checks of its own (Metal, for one, where wgpu clamps every access),
    /// that removes work the kernel makes redundant, and it cannot add any. Reductions, shaped
    /// (Adafactor), norm and health kernels keep the checks always.
    pub runtime_checks: bool,
    /// Whether matrix products (Muon's Newton–Schulz) stage their operands through 16 × 16
    /// tiles in workgroup memory (the default on GPUs) or read them straight from storage
    /// (lavapipe's measured default: 0.3 GFLOP/s so and 0.2 tiled, its workgroup barriers
    /// being coroutine switches). Both sum each output in k order.
    #[serde(default = "tiled_by_default")]
    pub tiled_products: bool,
}

fn tiled_by_default() -> bool {
    true
}

/// Where the step kernels read a step's scalars (the step table of `SCALAR_SLOTS` slots)
/// from: the same bytes, bound as a read-only storage buffer or as a uniform buffer. Drivers
/// differ in which is faster for data every invocation reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ScalarBinding {
    /// `var<storage, read>`.
    Storage,
    /// `var<uniform>` (the table must fit `max_uniform_buffer_binding_size`).
    Uniform,
}

impl ScalarBinding {
    /// Both, in declaration order.
    pub const ALL: [ScalarBinding; 2] = [ScalarBinding::Storage, ScalarBinding::Uniform];
}

/// The default physical-buffer cap (see [`Tuning::buffer_bytes`]).
pub const DEFAULT_BUFFER_BYTES: u64 = 512 << 20;

impl Tuning {
    /// The defaults for a device with these limits.
    pub fn for_limits(limits: &wgpu::Limits) -> Self {
        let align = segment_alignment(limits);
        let max_binding = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        let buffer_bytes = DEFAULT_BUFFER_BYTES.min(limits.max_buffer_size) / align * align;
        Tuning {
            workgroup_size: 256.min(limits.max_compute_invocations_per_workgroup),
            items_per_invocation: 4,
            min_workgroups: 1,
            max_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
            segment_bytes: buffer_bytes.min(max_binding) / align * align,
            buffer_bytes,
            scalars: ScalarBinding::Storage,
            runtime_checks: false,
            tiled_products: true,
        }
    }

    /// The defaults for this adapter: [`for_limits`](Self::for_limits), with what was
    /// measured on its family ([`adapter_family`]) applied.
    pub fn for_adapter(info: &wgpu::AdapterInfo, limits: &wgpu::Limits) -> Self {
        let mut tuning = Self::for_limits(limits);
        if let Some(family) = measured(info) {
            (family.apply)(&mut tuning, limits);
        }
        tuning
    }

    /// Checks the tuning against the device's limits.
    pub fn validate(&self, limits: &wgpu::Limits) -> Result<()> {
        let align = segment_alignment(limits);
        let bad = |msg: String| Err(Error::InvalidTuning(msg));
        if self.workgroup_size == 0
            || self.workgroup_size > limits.max_compute_invocations_per_workgroup
            || self.workgroup_size > limits.max_compute_workgroup_size_x
        {
            return bad(format!(
                "workgroup_size {} must be in 1..={}",
                self.workgroup_size,
                limits.max_compute_invocations_per_workgroup.min(limits.max_compute_workgroup_size_x)
            ));
        }
        if !(1..=64).contains(&self.items_per_invocation) {
            return bad(format!("items_per_invocation {} must be in 1..=64", self.items_per_invocation));
        }
        if self.min_workgroups == 0 {
            return bad("min_workgroups 0 must be at least 1".into());
        }
        if self.max_workgroups_per_dimension == 0
            || self.max_workgroups_per_dimension > limits.max_compute_workgroups_per_dimension
        {
            return bad(format!(
                "max_workgroups_per_dimension {} must be in 1..={}",
                self.max_workgroups_per_dimension, limits.max_compute_workgroups_per_dimension
            ));
        }
        let max_binding = limits.max_storage_buffer_binding_size;
        if self.segment_bytes == 0 || !self.segment_bytes.is_multiple_of(align) || self.segment_bytes > max_binding {
            return bad(format!(
                "segment_bytes {} must be a positive multiple of {align} and at most {max_binding}",
                self.segment_bytes
            ));
        }
        // Every per-sub-range dispatch gives each workgroup at least one element: a grid of
        // max² workgroups covers a sub-range whole, whatever the kernel.
        let max = u64::from(self.max_workgroups_per_dimension);
        let elements = crate::ElementFormat::F32.elements_in(self.segment_bytes);
        if max * max < elements {
            return bad(format!(
                "max_workgroups_per_dimension {max} gives grids of {} workgroups, fewer than the {elements} \
                 elements of a sub-range (segment_bytes {}): raise it to at least {} or lower segment_bytes",
                max * max,
                self.segment_bytes,
                elements.isqrt() + u64::from(elements.isqrt() * elements.isqrt() < elements)
            ));
        }
        if self.scalars == ScalarBinding::Uniform && !uniform_table_fits(limits) {
            return bad(format!(
                "scalars Uniform binds a step table of up to {} bytes, and this device's \
                 max_uniform_buffer_binding_size is {}: use ScalarBinding::Storage",
                crate::engine::MAX_TABLE_BYTES,
                limits.max_uniform_buffer_binding_size
            ));
        }
        if self.buffer_bytes < self.segment_bytes || self.buffer_bytes > limits.max_buffer_size {
            return bad(format!(
                "buffer_bytes {} must be at least segment_bytes ({}) and at most the device's max_buffer_size {}",
                self.buffer_bytes, self.segment_bytes, limits.max_buffer_size
            ));
        }
        Ok(())
    }

    /// Elements in one sub-range, whatever their format (see [`segment_bytes`](Self::segment_bytes)).
    pub fn segment_len(&self) -> usize {
        crate::ElementFormat::F32.elements_in(self.segment_bytes) as usize
    }
}

/// Sub-ranges must start on the device's storage offset alignment and hold whole `vec4`s, a
/// 16-bit tensor's (half the bytes of an f32 one's) too.
fn segment_alignment(limits: &wgpu::Limits) -> u64 {
    2 * u64::from(limits.min_storage_buffer_offset_alignment).max(16)
}

/// An adapter family and the tuning `wgpu-optim tune` measured on one of its devices. A
/// family not listed gets [`Tuning::for_limits`]: no choice is assumed where none was
/// measured.
struct Measured {
    family: &'static str,
    matches: fn(&wgpu::AdapterInfo) -> bool,
    apply: fn(&mut Tuning, &wgpu::Limits),
}

const MEASURED: &[Measured] = &[Measured { family: "Mesa llvmpipe (lavapipe)", matches: is_llvmpipe, apply: llvmpipe }];

fn is_llvmpipe(info: &wgpu::AdapterInfo) -> bool {
    info.name.contains("llvmpipe")
}

/// `wgpu-optim tune --log2-size 22` on lavapipe (Mesa 22.3.6, LLVM 15, 2 x86-64 cores;
/// README's Tuning section has the table): the scalars as a uniform ran the AdamW step 18 %
/// faster (64.5 against 78.3 ms); workgroup size and elements per invocation within 1 % of
/// 256 × 4 from 256 × 4 up; runtime checks no different (its Vulkan driver's own robust
/// buffer access stands either way).
fn llvmpipe(t: &mut Tuning, limits: &wgpu::Limits) {
    if uniform_table_fits(limits) {
        t.scalars = ScalarBinding::Uniform;
    }
    // Its threads are the host's cores: at 2^14 elements, 512 × 8 (one workgroup) ran at
    // half the speed of 512 × 4 (two).
    t.min_workgroups = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    // Muon's products at 256 × 1024 (cli/examples/muon_step.rs): 0.3 GFLOP/s straight from
    // storage, 0.2 through workgroup tiles (its barriers are coroutine switches).
    t.tiled_products = false;
}

/// Whether the largest step table fits one uniform binding of a device with these limits.
fn uniform_table_fits(limits: &wgpu::Limits) -> bool {
    crate::engine::MAX_TABLE_BYTES <= limits.max_uniform_buffer_binding_size
}

/// The adapter family whose measured tuning [`Tuning::for_adapter`] applies to `info`, if any.
pub fn adapter_family(info: &wgpu::AdapterInfo) -> Option<&'static str> {
    measured(info).map(|f| f.family)
}

/// The entry of the adapter table `info` matches.
fn measured(info: &wgpu::AdapterInfo) -> Option<&'static Measured> {
    MEASURED.iter().find(|f| (f.matches)(info))
}

/// A tuning and the adapter it was measured on, as `wgpu-optim tune --save` writes it (JSON).
/// Loaded with [`SavedTuning::load`], or through `WGPU_OPTIM_TUNING` by
/// [`GpuContext::new`](crate::GpuContext::new); it applies only to the adapter it names.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedTuning {
    /// The adapter's name, as wgpu reports it.
    pub adapter: String,
    /// Its backend (`Vulkan`, `Metal`, …).
    pub backend: String,
    /// Its PCI vendor and device ids (0 where the backend gives none).
    pub vendor: u32,
    /// See `vendor`.
    pub device: u32,
    /// The tuning.
    pub tuning: Tuning,
}

impl SavedTuning {
    /// `tuning`, measured on the adapter `info` describes.
    pub fn new(info: &wgpu::AdapterInfo, tuning: Tuning) -> Self {
        SavedTuning {
            adapter: info.name.clone(),
            backend: format!("{:?}", info.backend),
            vendor: info.vendor,
            device: info.device,
            tuning,
        }
    }

    /// Writes it to `path` as JSON.
    pub fn save(&self, path: &Path) -> Result<()> {
        let fail = |message: String| Error::TuningFile { path: path.display().to_string(), message };
        let json = serde_json::to_string_pretty(self).map_err(|e| fail(e.to_string()))?;
        std::fs::write(path, json).map_err(|e| fail(format!("cannot write it: {e}")))
    }

    /// Reads a tuning [`save`](Self::save) wrote.
    pub fn load(path: &Path) -> Result<Self> {
        let fail = |message: String| Error::TuningFile { path: path.display().to_string(), message };
        let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
        serde_json::from_str(&text).map_err(|e| fail(format!("not a saved tuning: {e}")))
    }

    /// The tuning, if it was measured on the adapter `info` describes (same name, backend and
    /// ids); a tuning of another adapter is refused, naming both.
    pub fn tuning_for(&self, info: &wgpu::AdapterInfo, path: &Path) -> Result<Tuning> {
        let same = self.adapter == info.name
            && self.backend == format!("{:?}", info.backend)
            && (self.vendor, self.device) == (info.vendor, info.device);
        if !same {
            return Err(Error::TuningFile {
                path: path.display().to_string(),
                message: format!(
                    "measured on {} ({}, {:04x}:{:04x}), not on this adapter, {} ({:?}, {:04x}:{:04x}): run \
                     `wgpu-optim tune --save` on this one, or unset WGPU_OPTIM_TUNING",
                    self.adapter,
                    self.backend,
                    self.vendor,
                    self.device,
                    info.name,
                    info.backend,
                    info.vendor,
                    info.device
                ),
            });
        }
        Ok(self.tuning.clone())
    }
}
