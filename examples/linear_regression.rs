//! Training on the GPU with the optimizer step in the caller's own pipeline: a linear
//! regression whose forward and backward passes are WGSL kernels of this example, and whose
//! Adam step is wgpu-optim's, all recorded into one command encoder — K steps per submit,
//! the loss read back only now and then.
//!
//! `cargo run --release --example linear_regression`

use wgpu_optim::{Adam, GpuContext, GpuOptimizer, GpuTensor};

/// Forward (residuals) and backward (mean-squared-error gradient, loss) as two kernels.
const MODEL: &str = r#"
struct Dims { n: u32, d: u32 }
@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> x: array<f32>;              // n × d samples
@group(0) @binding(2) var<storage, read> y: array<f32>;              // n targets
@group(0) @binding(3) var<storage, read_write> params: array<f32>;   // w (d), then b
@group(0) @binding(4) var<storage, read_write> residual: array<f32>; // n
@group(0) @binding(5) var<storage, read_write> grads: array<f32>;    // d + 1
@group(0) @binding(6) var<storage, read_write> loss: array<f32>;     // 1

@compute @workgroup_size(256)
fn forward(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if i >= dims.n {
        return;
    }
    var s = params[dims.d];
    for (var k = 0u; k < dims.d; k = k + 1u) {
        s = s + x[i * dims.d + k] * params[k];
    }
    residual[i] = s - y[i];
}

var<workgroup> part: array<f32, 256>;

fn tree_sum(lid: u32, v: f32) -> f32 {
    part[lid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s / 2u) {
        if lid < s {
            part[lid] = part[lid] + part[lid + s];
        }
        workgroupBarrier();
    }
    let total = part[0];
    workgroupBarrier();
    return total;
}

// d/dw of mean((x·w + b - y)²) = 2/n Σ r x; d/db = 2/n Σ r.
@compute @workgroup_size(256)
fn backward(@builtin(local_invocation_index) lid: u32) {
    for (var k = 0u; k <= dims.d; k = k + 1u) {
        var acc = 0.0;
        for (var i = lid; i < dims.n; i = i + 256u) {
            var feature = 1.0;
            if k < dims.d {
                feature = x[i * dims.d + k];
            }
            acc = acc + residual[i] * feature;
        }
        let total = tree_sum(lid, acc);
        if lid == 0u {
            grads[k] = 2.0 * total / f32(dims.n);
        }
    }
    var sq = 0.0;
    for (var i = lid; i < dims.n; i = i + 256u) {
        sq = sq + residual[i] * residual[i];
    }
    let total = tree_sum(lid, sq);
    if lid == 0u {
        loss[0] = total / f32(dims.n);
    }
}
"#;

/// What a training run reports.
#[derive(Debug)]
pub struct Trained {
    /// Loss after each read-back, with its step.
    pub losses: Vec<(u32, f32)>,
    /// The health check's `max |Δp| / max |p|` of the last step before each read-back.
    pub updates: Vec<(u32, f32)>,
    /// No NaN or infinity in the weights or Adam's state at any read-back.
    pub finite: bool,
    /// Learned weights and bias.
    pub params: Vec<f32>,
    /// The weights and bias the data was made with.
    pub truth: Vec<f32>,
}

/// Trains `steps` Adam steps, `per_submit` per command buffer, on a generated problem of
/// `n` samples and `d` features. Deterministic.
pub fn train(
    ctx: &GpuContext,
    n: u32,
    d: u32,
    steps: u32,
    per_submit: u32,
    checkpoint: Option<&std::path::Path>,
) -> Result<Trained, wgpu_optim::Error> {
    let (nu, du) = (n as usize, d as usize);
    // Data: x uniform in [-1, 1), y = x·w* + b* + small noise, from a fixed hash.
    let unit = |i: usize, salt: u64| {
        let mut z = (i as u64).wrapping_add(salt).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z ^= z >> 29;
        z = z.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let truth: Vec<f32> = (0..=du).map(|k| 2.0 * unit(k, 7)).collect();
    let x: Vec<f32> = (0..nu * du).map(|i| unit(i, 1)).collect();
    let y: Vec<f32> = (0..nu)
        .map(|i| truth[du] + (0..du).map(|k| x[i * du + k] * truth[k]).sum::<f32>() + 0.01 * unit(i, 3))
        .collect();

    let device = ctx.device();
    let storage = |label, bytes: u64, extra| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.next_multiple_of(16),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | extra,
            mapped_at_creation: false,
        })
    };
    let x_buf = storage("x", 4 * x.len() as u64, wgpu::BufferUsages::empty());
    let y_buf = storage("y", 4 * y.len() as u64, wgpu::BufferUsages::empty());
    let param_buf = storage("params", 4 * (du as u64 + 1), wgpu::BufferUsages::COPY_SRC);
    let grad_buf = storage("grads", 4 * (du as u64 + 1), wgpu::BufferUsages::empty());
    let residual = storage("residual", 4 * nu as u64, wgpu::BufferUsages::empty());
    let loss_buf = storage("loss", 16, wgpu::BufferUsages::COPY_SRC);
    let dims = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("dims"),
        size: 16,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let queue = ctx.queue();
    queue.write_buffer(&x_buf, 0, bytemuck::cast_slice(&x));
    queue.write_buffer(&y_buf, 0, bytemuck::cast_slice(&y));
    queue.write_buffer(&dims, 0, bytemuck::cast_slice(&[n, d, 0, 0]));

    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("linear regression"),
        source: wgpu::ShaderSource::Wgsl(MODEL.into()),
    });
    // One explicit layout shared by both kernels (an automatic one would hold only the
    // bindings each kernel uses).
    let entry = |binding, ty| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer { ty, has_dynamic_offset: false, min_binding_size: None },
        count: None,
    };
    let read_only = wgpu::BufferBindingType::Storage { read_only: true };
    let read_write = wgpu::BufferBindingType::Storage { read_only: false };
    let group_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some("linear regression"),
        entries: &[
            entry(0, wgpu::BufferBindingType::Uniform),
            entry(1, read_only),
            entry(2, read_only),
            entry(3, read_write),
            entry(4, read_write),
            entry(5, read_write),
            entry(6, read_write),
        ],
    });
    let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some("linear regression"),
        bind_group_layouts: &[Some(&group_layout)],
        immediate_size: 0,
    });
    let pipeline = |entry| {
        device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: Some(&layout),
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        })
    };
    let (forward, backward) = (pipeline("forward"), pipeline("backward"));
    let buffers = [&dims, &x_buf, &y_buf, &param_buf, &residual, &grad_buf, &loss_buf];
    let entries: Vec<_> = buffers
        .iter()
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() })
        .collect();
    let model_group =
        device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &group_layout, entries: &entries });

    // The optimizer works on the example's own parameter and gradient buffers.
    let params = GpuTensor::from_buffer(ctx, &param_buf, 0, du + 1)?;
    let grads = GpuTensor::from_buffer(ctx, &grad_buf, 0, du + 1)?;
    params.write(ctx, &vec![0.0; du + 1])?;
    let mut adam = GpuOptimizer::from_tensors(ctx, Adam::new(0.05), params.clone(), grads)?;
    // Keep the parameters of before each submit's last step, for the health check's update size.
    adam.track_updates(true)?;

    let mut losses = Vec::new();
    let mut updates = Vec::new();
    let mut finite = true;
    let mut done = 0;
    while done < steps {
        let k = per_submit.min(steps - done);
        let mut encoder = device.create_command_encoder(&Default::default());
        for _ in 0..k {
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                pass.set_pipeline(&forward);
                pass.set_bind_group(0, &model_group, &[]);
                pass.dispatch_workgroups(n.div_ceil(256), 1, 1);
                pass.set_pipeline(&backward);
                pass.dispatch_workgroups(1, 1, 1);
            }
            adam.record(&mut encoder, 1)?;
        }
        queue.submit([encoder.finish()]);
        done += k;
        if done % 50 == 0 || done == steps {
            // The loss of the forward pass of the last step of this submit.
            let loss = GpuTensor::from_buffer(ctx, &loss_buf, 0, 1)?.read(ctx)?;
            losses.push((done, loss[0]));
            // NaN/inf counts of the weights, exp_avg and exp_avg_sq, and the last update.
            let health = adam.health()?;
            finite &= health.iter().all(|t| t.is_finite());
            updates.push((done, health[0].update_ratio().unwrap_or(0.0)));
        }
    }
    if let Some(path) = checkpoint {
        adam.save(path)?;
    }
    Ok(Trained { losses, updates, finite, params: params.read(ctx)?, truth })
}

#[allow(dead_code)]
fn main() -> Result<(), wgpu_optim::Error> {
    let ctx = GpuContext::new()?;
    println!("adapter: {}", ctx.adapter_info().name);
    let checkpoint = std::env::temp_dir().join("linear_regression_adam.safetensors");
    let t = train(&ctx, 4096, 16, 400, 10, Some(&checkpoint))?;
    for ((step, loss), (_, update)) in t.losses.iter().zip(&t.updates) {
        println!("step {step:4}  loss {loss:.6}  update/param {update:.2e}");
    }
    println!("optimizer state saved to {}", checkpoint.display());
    let err = t.params.iter().zip(&t.truth).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    println!("largest |learned - true| weight: {err:.4}");
    Ok(())
}
