//! GPU acquisition: pick an adapter and open a device with the adapter's own limits, or wrap
//! a device the caller already has.

use std::sync::Arc;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::tuning::Tuning;

/// Which adapter to open, and its tuning. `Default` reads `WGPU_BACKEND`, `WGPU_ADAPTER_NAME`
/// and `WGPU_OPTIM_TUNING`.
#[derive(Clone, Debug)]
pub struct AdapterRequest {
    /// Backends to search (default: `WGPU_BACKEND`, else Vulkan, Metal, DX12 and browser WebGPU).
    pub backends: wgpu::Backends,
    /// Case-insensitive substring of the adapter name (default: `WGPU_ADAPTER_NAME`).
    pub name: Option<String>,
    /// A tuning saved by `wgpu-optim tune --save` for this adapter (default:
    /// `WGPU_OPTIM_TUNING`); without one, [`Tuning::for_adapter`].
    pub tuning: Option<std::path::PathBuf>,
}

impl AdapterRequest {
    /// From `WGPU_BACKEND` and `WGPU_ADAPTER_NAME`, as [`Default`], but a `WGPU_BACKEND` that
    /// names no backend is an error instead of being ignored.
    pub fn from_env() -> Result<Self> {
        if let Ok(v) = std::env::var("WGPU_BACKEND")
            && !v.trim().is_empty()
            && wgpu::Backends::from_env().is_none()
        {
            return Err(Error::NoAdapter {
                detail: format!(": WGPU_BACKEND={v:?} names no backend"),
                advice: "Use vulkan, metal, dx12, gl or webgpu (comma-separated), or unset it".into(),
            });
        }
        Ok(Self::default())
    }
}

/// What to do when no adapter of `backends` exists.
fn no_adapter_advice(backends: wgpu::Backends) -> String {
    let select = "WGPU_BACKEND and WGPU_ADAPTER_NAME select among several adapters";
    if backends.contains(wgpu::Backends::VULKAN) {
        format!(
            "Install a Vulkan driver; on a machine without a GPU, Mesa's software device lavapipe works \
             (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers libvulkan1`). {select}"
        )
    } else {
        format!(
            "This machine has no adapter of {backends:?}: choose a backend it has (unset WGPU_BACKEND to \
             search Vulkan, Metal, DX12 and WebGPU). {select}"
        )
    }
}

impl Default for AdapterRequest {
    fn default() -> Self {
        AdapterRequest {
            backends: wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY),
            name: std::env::var("WGPU_ADAPTER_NAME").ok().filter(|s| !s.is_empty()),
            tuning: std::env::var_os("WGPU_OPTIM_TUNING").filter(|s| !s.is_empty()).map(Into::into),
        }
    }
}

/// A device, its queue and the engine state (pipeline cache, tuning). Cheap to clone.
#[derive(Clone)]
pub struct GpuContext {
    inner: Arc<Inner>,
}

struct Inner {
    /// Shared by every context of one device (`with_tuning` keeps it): the device's identity,
    /// which wgpu's own ids cannot give across instances.
    device_token: Arc<()>,
    /// Why the device was lost, once wgpu says so: every call after it is `DeviceLost`.
    lost: Lost,
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    tuning: Tuning,
    engine: Engine,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.inner.info.name)
            .field("backend", &self.inner.info.backend)
            .field("tuning", &self.inner.tuning)
            .finish()
    }
}

impl GpuContext {
    /// Opens the best adapter (see [`GpuContext::with_request`]) with default tuning.
    pub fn new() -> Result<Self> {
        Self::with_request(&AdapterRequest::from_env()?)
    }

    /// Opens an adapter: among those matching the request, a discrete GPU is preferred to an
    /// integrated one, and both to a software rasteriser such as lavapipe. The device is
    /// requested with the adapter's own limits, not wgpu's conservative defaults, so large
    /// bindings and buffers are available.
    pub fn with_request(request: &AdapterRequest) -> Result<Self> {
        let instance = instance_for(request.backends);
        let adapters = pollster::block_on(instance.enumerate_adapters(request.backends));
        let wanted = request.name.as_ref().map(|n| n.to_lowercase());
        let adapter = adapters
            .into_iter()
            .filter(|a| wanted.as_ref().is_none_or(|w| a.get_info().name.to_lowercase().contains(w)))
            .max_by_key(|a| adapter_rank(&a.get_info()))
            .ok_or_else(|| Error::NoAdapter {
                detail: match &request.name {
                    Some(n) => format!(" named like {n:?} on backends {:?}", request.backends),
                    None => format!(" on backends {:?}", request.backends),
                },
                advice: no_adapter_advice(request.backends),
            })?;
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("wgpu-optim"),
            required_features: adapter.features() & wgpu::Features::TIMESTAMP_QUERY,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| Error::RequestDevice(e.to_string()))?;
        // Every call of this crate runs inside error scopes; anything that still escapes is
        // reported on stderr rather than aborting the process through wgpu's default panic.
        device.on_uncaptured_error(Arc::new(|e| eprintln!("wgpu-optim: uncaptured wgpu error: {e}")));
        // The device is this crate's: its loss is recorded, and reported by every later call.
        let lost = Lost::default();
        let record = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            record.set(if message.is_empty() { format!("{reason:?}") } else { format!("{reason:?}: {message}") })
        });
        let (limits, info) = (device.limits(), adapter.get_info());
        let tuning = match &request.tuning {
            Some(path) => crate::tuning::SavedTuning::load(path)?.tuning_for(&info, path)?,
            None => Tuning::for_adapter(&info, &limits),
        };
        Self::build(Arc::new(()), lost, device, queue, info, limits, tuning)
    }

    /// Wraps a device and queue the caller already has (for instance a training pipeline's).
    /// The device's own limits are used; nothing is changed on the device — its device-lost
    /// callback stays the caller's, so tell this context of a loss with
    /// [`mark_lost`](Self::mark_lost) to have every later call report [`Error::DeviceLost`].
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue, info: wgpu::AdapterInfo) -> Result<Self> {
        let limits = device.limits();
        let tuning = Tuning::for_adapter(&info, &limits);
        Self::build(Arc::new(()), Lost::default(), device, queue, info, limits, tuning)
    }

    /// Records that the device was lost (`reason` is kept for the errors): for a device the
    /// caller made, whose device-lost callback is the caller's.
    pub fn mark_lost(&self, reason: impl Into<String>) {
        self.inner.lost.set(reason.into());
    }

    /// `Err(DeviceLost)` once the device is lost. wgpu reports a loss from its maintenance,
    /// which runs when work is waited for (a read, sync, save, health check or `wait`); from
    /// then on every call returns the error. Nothing is polled here: this is on every call's
    /// path, recording included.
    pub(crate) fn check_alive(&self) -> Result<()> {
        match self.inner.lost.get() {
            Some(reason) => Err(Error::DeviceLost { reason }),
            None => Ok(()),
        }
    }

    fn build(
        device_token: Arc<()>,
        lost: Lost,
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        limits: wgpu::Limits,
        tuning: Tuning,
    ) -> Result<Self> {
        check_compute(&limits)?;
        tuning.validate(&limits)?;
        // The engine's layouts, inside error scopes: a device whose limits refuse one gives an
        // error, not wgpu's panicking default handler.
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let engine = Engine::new(&device, &queue, &tuning);
        let (v, o) = (pollster::block_on(validation.pop()), pollster::block_on(oom.pop()));
        if let Some(e) = v {
            return Err(Error::Wgpu { during: "creating the engine's layouts", message: e.to_string() });
        }
        if let Some(e) = o {
            return Err(Error::OutOfMemory { during: "creating the engine's layouts", message: e.to_string() });
        }
        Ok(GpuContext { inner: Arc::new(Inner { device_token, lost, device, queue, info, limits, tuning, engine }) })
    }

    /// The same device with other tuning (validated against its limits). Tensors and
    /// optimizers made through one context must not be mixed with another's sub-range size.
    pub fn with_tuning(&self, tuning: Tuning) -> Result<Self> {
        let i = &self.inner;
        let (token, lost) = (i.device_token.clone(), i.lost.clone());
        Self::build(token, lost, i.device.clone(), i.queue.clone(), i.info.clone(), i.limits.clone(), tuning)
    }

    /// Whether `other` runs on the same device (this context, or one made from it by
    /// [`with_tuning`](Self::with_tuning)).
    pub fn same_device(&self, other: &GpuContext) -> bool {
        Arc::ptr_eq(&self.inner.device_token, &other.inner.device_token)
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }
    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }
    /// What the adapter says of itself (name, backend, device type).
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }
    /// The device's limits.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }
    /// The engine tuning in force.
    pub fn tuning(&self) -> &Tuning {
        &self.inner.tuning
    }
    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Runs `f` inside validation and out-of-memory error scopes and turns anything wgpu
    /// reports into [`Error::Wgpu`], so no wgpu error reaches its default panic handler.
    pub fn scoped<T>(&self, during: &'static str, f: impl FnOnce() -> T) -> Result<T> {
        self.check_alive()?;
        let device = &self.inner.device;
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let v = pollster::block_on(validation.pop());
        let o = pollster::block_on(oom.pop());
        match (v, o) {
            (None, None) => Ok(out),
            (Some(e), _) => Err(Error::Wgpu { during, message: e.to_string() }),
            (None, Some(e)) => Err(Error::OutOfMemory { during, message: e.to_string() }),
        }
    }

    /// Compiles `entry` of WGSL `source` as a compute pipeline with the layout wgpu derives
    /// from the shader (read it back with `get_bind_group_layout`), inside this crate's error
    /// scopes: a kernel of the caller's own whose error is an [`Error::Wgpu`], not a panic.
    pub fn compile_kernel(&self, label: &str, source: &str, entry: &str) -> Result<wgpu::ComputePipeline> {
        self.scoped("compiling a kernel", || {
            let module = self.device().create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
            self.device().create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(label),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        })
    }

    /// Refuses an allocation of `bytes` that cannot succeed, before anything is allocated: on
    /// a CPU device (lavapipe, SwiftShader) buffers are host memory, and a request beyond the
    /// host's available memory would abort the process inside the driver. A GPU's own memory
    /// cannot be queried through wgpu; its out-of-memory errors come back as
    /// [`Error::OutOfMemory`] from the allocation's error scope.
    pub(crate) fn check_allocation(&self, during: &'static str, bytes: u64) -> Result<()> {
        if self.adapter_info().device_type != wgpu::DeviceType::Cpu {
            return Ok(());
        }
        match host_memory_available() {
            Some(available) if bytes > available => Err(Error::OutOfMemory {
                during,
                message: format!(
                    "{bytes} bytes requested, {available} bytes of host memory available (this CPU device's \
                     buffers are host memory)"
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Blocks until all submitted work has finished.
    pub fn wait(&self) -> Result<()> {
        self.check_alive()?;
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Wgpu { during: "waiting for the GPU", message: e.to_string() })?;
        // A loss wgpu reported while waiting.
        self.check_alive()
    }
}

/// Higher is better: real GPUs before software ones, native backends before GL.
fn adapter_rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let kind = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 4,
        wgpu::DeviceType::IntegratedGpu => 3,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 1,
        wgpu::DeviceType::Cpu => 0,
    };
    let backend = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 2,
        wgpu::Backend::BrowserWebGpu => 1,
        _ => 0,
    };
    (kind, backend)
}

/// The host memory available to new allocations (Linux's `MemAvailable`), where the system
/// says.
fn host_memory_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Whether a device can run the step kernels at all: compute shaders, and the four storage
/// buffers of the smallest step (the step table and counter, p and g).
fn check_compute(limits: &wgpu::Limits) -> Result<()> {
    let needs = [
        ("max_compute_invocations_per_workgroup", limits.max_compute_invocations_per_workgroup, 1),
        ("max_compute_workgroups_per_dimension", limits.max_compute_workgroups_per_dimension, 1),
        ("max_compute_workgroup_size_x", limits.max_compute_workgroup_size_x, 1),
        ("max_storage_buffers_per_shader_stage", limits.max_storage_buffers_per_shader_stage, 4),
    ];
    match needs.iter().find(|(_, has, need)| has < need) {
        Some((name, has, need)) => Err(Error::OverLimit(format!(
            "this device cannot run the step kernels: its {name} is {has}, they need at least {need} \
             (a WebGL2-class device runs no compute shaders: use WebGPU, Vulkan, Metal or DX12)"
        ))),
        None => Ok(()),
    }
}

/// Whether (and why) a device was lost: shared by its contexts and its lost callback.
#[derive(Clone, Default)]
struct Lost(Arc<std::sync::Mutex<Option<String>>>);

impl Lost {
    fn set(&self, reason: String) {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert(reason);
    }
    fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One process-wide wgpu instance per set of backends: every context this crate creates draws
/// its device from it, so buffer ids of two such contexts never collide (wgpu's ids are per
/// instance), and a buffer of another context is told apart by its device.
fn instance_for(backends: wgpu::Backends) -> wgpu::Instance {
    static INSTANCES: std::sync::Mutex<Vec<(wgpu::Backends, wgpu::Instance)>> = std::sync::Mutex::new(Vec::new());
    let mut all = INSTANCES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, i)) = all.iter().find(|(b, _)| *b == backends) {
        return i.clone();
    }
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    all.push((backends, instance.clone()));
    instance
}
