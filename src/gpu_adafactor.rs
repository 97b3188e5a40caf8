//! Adafactor on the GPU: reductions, then the element-wise update, all dispatches of a step
//! (and of K steps) inside one compute pass.

use ndarray::Array1;

use crate::checkpoint::{GroupSnapshot, Snapshot};
use crate::engine::{self, StepTable, UNIFORM_BYTES, grid, uniform_window};
use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::optim::{Adafactor, Factoring, Optimizer, flag};
use crate::tensor::{GpuTensor, HostData};

const SOURCE: &str = include_str!("../shaders/adafactor.wgsl");
/// The shader's reduction workgroup size, chunk of the global sums and column block.
const RWG: u32 = 256;
const CHUNK: usize = crate::optim::adafactor::CHUNK;
const BLOCK: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct SegmentInfo {
    first_row: u32,
    rows: u32,
    first_matrix: u32,
    matrices: u32,
    first_chunk: u32,
    chunks: u32,
    len: u32,
    first_elem: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Layout {
    rows_per_matrix: u32,
    cols: u32,
    matrices: u32,
    blocks: u32,
    total_chunks: u32,
    rowsq_at: u32,
    colpart_at: u32,
    psq_at: u32,
    usq_at: u32,
    row_mean_at: u32,
    out_at: u32,
    col_at: u32,
    sqrt_numel: f32,
}

struct Pipelines {
    row_sums: wgpu::ComputePipeline,
    col_blocks: wgpu::ComputePipeline,
    p_sums: wgpu::ComputePipeline,
    finalize_vars: wgpu::ComputePipeline,
    finalize_alpha: wgpu::ComputePipeline,
    u_sums: wgpu::ComputePipeline,
    finalize_coef: wgpu::ComputePipeline,
    update: wgpu::ComputePipeline,
    advance: wgpu::ComputePipeline,
}

/// Adafactor whose parameters, gradients and factored state live on the GPU.
///
/// Each matrix (the last two dimensions) is kept inside one bound sub-range, so its rows
/// and columns are summed without crossing bindings; the tensor may span many sub-ranges.
pub struct GpuAdafactor {
    ctx: GpuContext,
    config: Adafactor,
    /// The parameters' shape as given, and as factored.
    dims: Vec<usize>,
    shape: Factoring,
    params: GpuTensor,
    grads: GpuTensor,
    variance: Option<GpuTensor>,
    row_var: Option<GpuTensor>,
    col_var: Option<GpuTensor>,
    /// Sums between the passes of a step, and [alpha, coef].
    _work: wgpu::Buffer,
    segments: Vec<SegmentInfo>,
    pipelines: Pipelines,
    _uniforms: wgpu::Buffer,
    uniform_group: wgpu::BindGroup,
    tensor_groups: Vec<wgpu::BindGroup>,
    segment_stride: u32,
    steps: StepTable,
    step: u64,
    /// The health check, built on first use.
    health: std::sync::OnceLock<crate::monitor::HealthCheck>,
}

impl std::fmt::Debug for GpuAdafactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuAdafactor").field("config", &self.config).field("shape", &self.shape).finish()
    }
}

fn storage_buffer(ctx: &GpuContext, label: &str, floats: usize) -> wgpu::Buffer {
    ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: (floats.max(4) as u64 * 4).next_multiple_of(16),
        usage: crate::tensor::TENSOR_USAGES,
        mapped_at_creation: false,
    })
}

impl GpuAdafactor {
    /// Uploads `params` of the given `shape` (rank ≥ 2 is factored over the last two
    /// dimensions) and creates zeroed gradients and state.
    pub fn new(
        ctx: &GpuContext,
        config: Adafactor,
        params: &(impl HostData + ?Sized),
        shape: &[usize],
    ) -> Result<Self> {
        config.validate()?;
        let dims = shape.to_vec();
        let shape = Factoring::of(shape)?;
        let data = params.as_f32s()?;
        let numel = shape.numel();
        if data.len() != numel {
            return Err(Error::LengthMismatch { what: "params (shape)", expected: numel, actual: data.len() });
        }
        if numel > u32::MAX as usize {
            return Err(Error::OverLimit(format!("Adafactor indexes elements in u32; {numel} elements are too many")));
        }
        let Factoring { matrices, rows: m, cols: n, factored } = shape;
        // Sub-ranges of whole matrices when factored, so that no row or column crosses one.
        let seg_len = ctx.tuning().segment_len(crate::ElementFormat::F32);
        let seg_len = if factored {
            if m * n > seg_len {
                return Err(Error::OverLimit(format!(
                    "one {m}×{n} matrix ({} bytes) exceeds a bound sub-range ({} bytes); raise Tuning::segment_bytes",
                    m * n * 4,
                    ctx.tuning().segment_bytes
                )));
            }
            seg_len / (m * n) * (m * n)
        } else {
            seg_len
        };
        let params = GpuTensor::zeros_with(ctx, crate::ElementFormat::F32, numel, seg_len)?;
        params.write(ctx, data)?;
        let grads = GpuTensor::zeros_with(ctx, crate::ElementFormat::F32, numel, seg_len)?;
        let blocks = if factored { m.div_ceil(BLOCK) } else { 0 };

        let mut segments = Vec::new();
        let (mut first_elem, mut first_chunk) = (0usize, 0usize);
        for s in params.segments() {
            let chunks = s.len.div_ceil(CHUNK);
            let (first_row, rows, first_matrix, mats) = if factored {
                (first_elem / n, s.len / n, first_elem / (m * n), s.len / (m * n))
            } else {
                (0, 0, 0, 0)
            };
            segments.push(SegmentInfo {
                first_row: first_row as u32,
                rows: rows as u32,
                first_matrix: first_matrix as u32,
                matrices: mats as u32,
                first_chunk: first_chunk as u32,
                chunks: chunks as u32,
                len: s.len as u32,
                first_elem: first_elem as u32,
            });
            first_elem += s.len;
            first_chunk += chunks;
        }
        let total_chunks = first_chunk;
        let max_dim = ctx.tuning().max_workgroups_per_dimension;
        for s in &segments {
            if s.matrices as usize * blocks > max_dim as usize {
                return Err(Error::OverLimit(format!(
                    "{} matrices of {m} rows in one sub-range need {} column blocks, more than {max_dim}; lower Tuning::segment_bytes",
                    s.matrices,
                    s.matrices as usize * blocks
                )));
            }
        }

        // The work buffer: row sums, column block sums, chunk sums of p² and U², the mean of
        // row_var per matrix, and [alpha, coef].
        // row_var and col_var share one buffer; col_var starts at an aligned offset so that
        // both can be viewed (and read back) as tensors.
        let align = (ctx.limits().min_storage_buffer_offset_alignment as usize / 4).max(4);
        let col_at = if factored { (matrices * m).next_multiple_of(align) } else { 0 };
        let (rowsq, colpart) = if factored { (matrices * m, matrices * blocks * n) } else { (0, 0) };
        let rowsq_at = 0;
        let colpart_at = rowsq_at + rowsq;
        let psq_at = colpart_at + colpart;
        let usq_at = psq_at + total_chunks;
        let row_mean_at = usq_at + total_chunks;
        let out_at = row_mean_at + matrices;
        let work_len = out_at + 2;
        if work_len > u32::MAX as usize {
            return Err(Error::OverLimit("Adafactor's work buffer exceeds u32 indexing".into()));
        }
        let layout = Layout {
            rows_per_matrix: m as u32,
            cols: n as u32,
            matrices: matrices as u32,
            blocks: blocks as u32,
            total_chunks: total_chunks as u32,
            rowsq_at: rowsq_at as u32,
            colpart_at: colpart_at as u32,
            psq_at: psq_at as u32,
            usq_at: usq_at as u32,
            row_mean_at: row_mean_at as u32,
            out_at: out_at as u32,
            col_at: col_at as u32,
            sqrt_numel: (numel as f64).powf(0.5) as f32,
        };

        let constants = [
            ("MAXIMIZE", flag(config.maximize)),
            ("WEIGHT_DECAY", flag(config.weight_decay != 0.0)),
            ("FACTORED", flag(factored)),
        ];
        let engine = ctx.engine();
        let compile = |entry| engine.adafactor_pipeline(ctx, SOURCE, entry, &constants);
        let pipelines = Pipelines {
            row_sums: compile("row_sums")?,
            col_blocks: compile("col_blocks")?,
            p_sums: compile("p_sums")?,
            finalize_vars: compile("finalize_vars")?,
            finalize_alpha: compile("finalize_alpha")?,
            u_sums: compile("u_sums")?,
            finalize_coef: compile("finalize_coef")?,
            update: compile("update")?,
            advance: compile("advance")?,
        };

        let steps = StepTable::new(ctx, config.kernel().scalar_size)?;
        let stride = u64::from(ctx.limits().min_uniform_buffer_offset_alignment).max(UNIFORM_BYTES);
        let segments_at = 0;
        let layout_at = segments_at + stride * segments.len() as u64;
        let variance =
            if factored { None } else { Some(GpuTensor::zeros_with(ctx, crate::ElementFormat::F32, numel, seg_len)?) };
        let (factors, work, uniforms, placeholder) = ctx.scoped("creating Adafactor's buffers", || {
            let uniforms = ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("adafactor uniforms"),
                size: layout_at + stride,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            for (i, s) in segments.iter().enumerate() {
                ctx.queue().write_buffer(&uniforms, segments_at + stride * i as u64, bytemuck::bytes_of(s));
            }
            ctx.queue().write_buffer(&uniforms, layout_at, bytemuck::bytes_of(&layout));
            (
                storage_buffer(ctx, "adafactor row_var and col_var", col_at + matrices * n),
                storage_buffer(ctx, "adafactor work", work_len),
                uniforms,
                storage_buffer(ctx, "adafactor unused", 0),
            )
        })?;
        let (uniform_group, tensor_groups) = ctx.scoped("binding Adafactor's tensors", || {
            let uniform_group = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("adafactor uniforms"),
                layout: &engine.adafactor_layouts[0],
                entries: &[
                    wgpu::BindGroupEntry { binding: 0, resource: steps.table.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 1, resource: steps.counter.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 2, resource: uniform_window(&uniforms, segments_at) },
                    wgpu::BindGroupEntry { binding: 3, resource: uniform_window(&uniforms, layout_at) },
                    wgpu::BindGroupEntry { binding: 5, resource: steps.control.as_entire_binding() },
                ],
            });
            let tensor_groups: Vec<_> = (0..params.segments().len())
                .map(|i| {
                    let resources = [
                        params.segments()[i].binding(),
                        grads.segments()[i].binding(),
                        match &variance {
                            Some(v) => v.segments()[i].binding(),
                            None => placeholder.as_entire_binding(),
                        },
                        factors.as_entire_binding(),
                        work.as_entire_binding(),
                    ];
                    let entries: Vec<_> = resources
                        .into_iter()
                        .enumerate()
                        .map(|(b, resource)| wgpu::BindGroupEntry { binding: b as u32, resource })
                        .collect();
                    ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some("adafactor tensors"),
                        layout: &engine.adafactor_layouts[1],
                        entries: &entries,
                    })
                })
                .collect();
            (uniform_group, tensor_groups)
        })?;
        let (row_var, col_var) = if factored {
            (
                Some(GpuTensor::from_buffer(ctx, &factors, 0, matrices * m)?),
                Some(GpuTensor::from_buffer(ctx, &factors, col_at as u64 * 4, matrices * n)?),
            )
        } else {
            (None, None)
        };
        Ok(GpuAdafactor {
            ctx: ctx.clone(),
            config,
            dims,
            shape,
            params,
            grads,
            variance,
            row_var,
            col_var,
            _work: work,
            segments,
            pipelines,
            _uniforms: uniforms,
            uniform_group,
            tensor_groups,
            steps,
            segment_stride: stride as u32,
            step: 0,
            health: std::sync::OnceLock::new(),
        })
    }

    /// Uploads `grads` and takes one step (submitted; does not wait).
    pub fn step(&mut self, grads: &(impl HostData + ?Sized)) -> Result<()> {
        self.grads.write(&self.ctx, grads.as_f32s()?)?;
        self.run(1)
    }

    /// Takes `steps` steps on the gradients already on the GPU, one compute pass per submit.
    pub fn run(&mut self, steps: u32) -> Result<()> {
        engine::run(self, steps)
    }

    /// Records `steps` steps into the caller's encoder (see [`crate::GpuOptimizer::record`]).
    pub fn record(&mut self, encoder: &mut wgpu::CommandEncoder, steps: u32) -> Result<()> {
        engine::record(self, encoder, steps)
    }

    fn encode_steps(&mut self, encoder: &mut wgpu::CommandEncoder, k: u32) {
        let step = self.step;
        let config = &self.config;
        self.steps.write(&self.ctx, step + 1, k, |j| config.scalars(step + 1 + u64::from(j)));
        let Factoring { matrices, rows: m, cols: n, factored } = self.shape;
        let max_dim = self.ctx.tuning().max_workgroups_per_dimension;
        let wg = self.ctx.tuning().workgroup_size;
        let stride = self.segment_stride;
        // Element counts are below 2^32 (checked in `new`), so every grid fits max_dim².
        let fold = |groups: u64| grid(groups.max(1), max_dim).unwrap_or((max_dim, max_dim));
        let p = &self.pipelines;
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("wgpu-optim adafactor step"),
            timestamp_writes: None,
        });
        // One dispatch per sub-range, with its own window of the segment table.
        let per_segment = |pass: &mut wgpu::ComputePass<'_>,
                           pipeline: &wgpu::ComputePipeline,
                           size: &dyn Fn(&SegmentInfo) -> (u32, u32)| {
            pass.set_pipeline(pipeline);
            for (i, s) in self.segments.iter().enumerate() {
                pass.set_bind_group(0, &self.uniform_group, &[stride * i as u32]);
                pass.set_bind_group(1, &self.tensor_groups[i], &[]);
                let (x, y) = size(s);
                pass.dispatch_workgroups(x, y, 1);
            }
        };
        // One dispatch over the whole tensor's sums (any sub-range's bind group will do).
        let once = |pass: &mut wgpu::ComputePass<'_>, pipeline: &wgpu::ComputePipeline, (x, y): (u32, u32)| {
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &self.uniform_group, &[0]);
            pass.set_bind_group(1, &self.tensor_groups[0], &[]);
            pass.dispatch_workgroups(x, y, 1);
        };
        for _ in 0..k {
            if factored {
                per_segment(&mut pass, &p.row_sums, &|s| fold(u64::from(s.rows)));
                let blocks = m.div_ceil(BLOCK) as u32;
                per_segment(&mut pass, &p.col_blocks, &|s| ((n as u32).div_ceil(RWG), s.matrices * blocks));
            }
            per_segment(&mut pass, &p.p_sums, &|s| fold(u64::from(s.chunks)));
            if factored {
                once(&mut pass, &p.finalize_vars, fold(((matrices * (m + n)) as u64).div_ceil(u64::from(RWG))));
            }
            once(&mut pass, &p.finalize_alpha, (1, 1));
            per_segment(&mut pass, &p.u_sums, &|s| fold(u64::from(s.chunks)));
            once(&mut pass, &p.finalize_coef, (1, 1));
            per_segment(&mut pass, &p.update, &|s| fold(u64::from(s.len.div_ceil(wg))));
            once(&mut pass, &p.advance, (1, 1));
        }
    }

    /// The state tensors this tensor keeps, by torch name.
    fn state(&self) -> impl Iterator<Item = (&'static str, &GpuTensor)> {
        self.slots().filter_map(|(slot, t)| Some((slot.torch_name, t?)))
    }

    /// Every state slot of Adafactor's kernel, with the tensor this shape keeps for it.
    fn slots(&self) -> impl Iterator<Item = (&'static crate::optim::StateSlot, Option<&GpuTensor>)> {
        let tensors = [&self.variance, &self.row_var, &self.col_var];
        self.config.kernel().state.iter().zip(tensors).map(|(slot, t)| (slot, t.as_ref()))
    }

    /// Saves the state (`row_var` and `col_var`, or `variance`), the step count and the
    /// configuration to a safetensors checkpoint, atomically (see
    /// [`GpuOptimizer::save`](crate::GpuOptimizer::save)); a
    /// [`CpuOptimizer`](crate::CpuOptimizer) of the same shape reads the same files.
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let mut state = Vec::new();
        for (slot, t) in self.slots() {
            if let Some(t) = t {
                state.push((slot, t.read_host(&self.ctx)?));
            }
        }
        let group = GroupSnapshot::of(&self.config, self.step, vec![self.dims.clone()], state, &None);
        Snapshot { groups: vec![group], scaler: None }.save(path.as_ref())
    }

    /// Loads a checkpoint of the same configuration and shape; a bad file changes nothing.
    pub fn load(&mut self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let path = path.as_ref();
        let snapshot = Snapshot::load(path)?;
        let group = snapshot.single(path)?;
        let restore = group.restore(path, &self.config, std::slice::from_ref(&self.dims), &None)?;
        let counter = u32::try_from(restore.step).map_err(|_| {
            crate::checkpoint::bad(path, format!("step {} exceeds the GPU counter's range", restore.step))
        })?;
        for ((_, t), data) in self.slots().zip(&restore.state) {
            if let (Some(t), Some(data)) = (t, data) {
                t.write_host(&self.ctx, data)?;
            }
        }
        self.steps.set_counter(&self.ctx, counter)?;
        self.step = restore.step;
        Ok(())
    }

    /// Checks the parameters and every state tensor on the GPU: NaN and infinity counts and
    /// the largest finite magnitude (see [`GpuOptimizer::health`](crate::GpuOptimizer::health);
    /// Adafactor does not track updates). Waits for the GPU.
    pub fn health(&self) -> Result<Vec<crate::monitor::TensorHealth>> {
        // Built on first use: bind groups over the parameters and the state, kept.
        let check = match self.health.get() {
            Some(check) => check,
            None => {
                let mut checked = vec![(0, "params", &self.params, None)];
                checked.extend(self.state().map(|(name, t)| (0, name, t, None)));
                let built = crate::monitor::HealthCheck::new(&self.ctx, &checked)?;
                self.health.get_or_init(|| built)
            }
        };
        check.run(&self.ctx)
    }

    /// The step counter on the GPU (waits for the GPU).
    pub fn read_gpu_step(&self) -> Result<u64> {
        self.steps.read_counter(&self.ctx)
    }

    /// Steps taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }
    /// The configuration.
    pub fn config(&self) -> &Adafactor {
        &self.config
    }
    /// How the tensor is factored.
    pub fn factoring(&self) -> Factoring {
        self.shape
    }
    /// The parameters on the GPU.
    pub fn params(&self) -> &GpuTensor {
        &self.params
    }
    /// The gradients the next step reads.
    pub fn grads(&self) -> &GpuTensor {
        &self.grads
    }
    /// Reads the parameters back (waits for the GPU).
    pub fn read_params(&self) -> Result<Array1<f32>> {
        self.params.to_array(&self.ctx)
    }
    /// Elements of optimizer state: `matrices × (M + N)` when factored, `numel` otherwise.
    pub fn state_len(&self) -> usize {
        [&self.variance, &self.row_var, &self.col_var].iter().filter_map(|t| t.as_ref()).map(|t| t.len()).sum()
    }
    /// Reads one state tensor back by torch's name: `row_var`, `col_var` or `variance`.
    pub fn read_state(&self, name: &str) -> Result<Array1<f32>> {
        let t = match name {
            "row_var" => &self.row_var,
            "col_var" => &self.col_var,
            "variance" => &self.variance,
            _ => &None,
        };
        match t {
            Some(t) => t.to_array(&self.ctx),
            None => Err(Error::UnknownState {
                optimizer: "Adafactor",
                name: name.to_string(),
                available: if self.shape.factored { vec!["row_var", "col_var"] } else { vec!["variance"] },
            }),
        }
    }
}

impl engine::Stepper for GpuAdafactor {
    fn context(&self) -> GpuContext {
        self.ctx.clone()
    }
    fn encode(&mut self, encoder: &mut wgpu::CommandEncoder, k: u32) {
        self.encode_steps(encoder, k)
    }
    fn taken(&mut self, k: u32) {
        self.step += u64::from(k);
    }
}
