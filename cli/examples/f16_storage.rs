//! Whether WGSL's native `f16` storage (the `SHADER_F16` feature) would be worth using for
//! 16-bit parameters and gradients instead of the crate's packed words.
//!
//! The crate stores f16 and bf16 tensors as `u32` words and converts with bit operations
//! (shaders/formats.wgsl), because WGSL leaves the rounding of an f32 → f16 conversion to
//! the implementation and the CPU reference rounds to nearest even, as torch does. This
//! measures, on one adapter and in the same run, an AdamW-shaped update over f16
//! parameters and gradients (f32 moments) both ways, interleaved (packed, native, packed,
//! …), and counts the stored parameters whose bits differ between the two.
//!
//! Run: `cargo run --release -p wgpu-optim-cli --example f16_storage [-- LOG2_LEN]`.

use std::time::Instant;

const WG: u32 = 256;
const STEPS_PER_SUBMIT: usize = 10;
const ROUNDS: usize = 15;

/// The update both kernels run, on four elements at a time (as the crate's kernels do).
const UPDATE: &str = r#"
fn adamw(p: vec4<f32>, g: vec4<f32>, i: u32) -> vec4<f32> {
    let m = mix(m_buf[i], g, vec4<f32>(0.1));
    let v = v_buf[i] * 0.999 + 0.001 * g * g;
    m_buf[i] = m;
    v_buf[i] = v;
    return p * (1.0 - 1e-5) - 1e-3 * m / (sqrt(v) * 31.6 + 1e-8);
}
"#;

const PACKED: &str = r#"
@group(0) @binding(0) var<storage, read_write> p_buf: array<vec2<u32>>;
@group(0) @binding(1) var<storage, read> g_buf: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read_write> m_buf: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> v_buf: array<vec4<f32>>;

fn load(w: vec2<u32>) -> vec4<f32> {
    return vec4<f32>(f16_decode(w.x & 0xffffu), f16_decode(w.x >> 16u), f16_decode(w.y & 0xffffu), f16_decode(w.y >> 16u));
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if i >= arrayLength(&p_buf) { return; }
    let x = adamw(load(p_buf[i]), load(g_buf[i]), i);
    p_buf[i] = vec2<u32>(f16_encode(x.x) | (f16_encode(x.y) << 16u), f16_encode(x.z) | (f16_encode(x.w) << 16u));
}
"#;

const NATIVE: &str = r#"
@group(0) @binding(0) var<storage, read_write> p_buf: array<vec4<f16>>;
@group(0) @binding(1) var<storage, read> g_buf: array<vec4<f16>>;
@group(0) @binding(2) var<storage, read_write> m_buf: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> v_buf: array<vec4<f32>>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if i >= arrayLength(&p_buf) { return; }
    p_buf[i] = vec4<f16>(adamw(vec4<f32>(p_buf[i]), vec4<f32>(g_buf[i]), i));
}
"#;

struct Kernel {
    pipeline: wgpu::ComputePipeline,
    bind: wgpu::BindGroup,
    p: wgpu::Buffer,
}

fn main() {
    let log2: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(22);
    let len = 1usize << log2;
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        ..Default::default()
    }))
    .expect("no adapter: install a Vulkan driver (Debian: mesa-vulkan-drivers libvulkan1)");
    let info = adapter.get_info();
    if !adapter.features().contains(wgpu::Features::SHADER_F16) {
        eprintln!("{} has no SHADER_F16: only the packed words can run there", info.name);
        std::process::exit(2);
    }
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_features: wgpu::Features::SHADER_F16,
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .expect("device");

    // The same starting values for both: parameters and gradients as f16 bits.
    let halves: Vec<u16> = (0..len).map(|i| f16_bits(((i % 977) as f32 - 488.0) / 97.0)).collect();
    let grads: Vec<u16> = (0..len).map(|i| f16_bits(((i * 7 % 1013) as f32 - 506.0) / 333.0)).collect();
    let make = |source: &str, label: &str| {
        use wgpu::util::DeviceExt;
        // `enable` must come first; the native kernel needs it.
        let enable = if source == NATIVE { "enable f16;" } else { "" };
        let full = format!("{enable}\n{}\n{UPDATE}\n{source}", wgpu_optim::format::WGSL);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(full.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(label),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        let init = |contents: &[u8], usage| {
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: None, contents, usage })
        };
        let storage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
        let p = init(bytemuck::cast_slice(&halves), storage);
        let g = init(bytemuck::cast_slice(&grads), storage);
        let zeros = vec![0u8; 4 * len];
        let m = init(&zeros, storage);
        let v = init(&zeros, storage);
        let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[&p, &g, &m, &v]
                .iter()
                .enumerate()
                .map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() })
                .collect::<Vec<_>>(),
        });
        Kernel { pipeline, bind, p }
    };
    let kernels = [make(PACKED, "packed"), make(NATIVE, "native")];
    let groups = (len as u32 / 4).div_ceil(WG);
    let (x, y) = if groups > 65535 { (65535, groups.div_ceil(65535)) } else { (groups, 1) };
    assert!(x * y * WG * 4 >= len as u32 && y == 1, "this measurement takes up to 2^26 elements");
    let run = |k: &Kernel| {
        let mut encoder = device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&k.pipeline);
            pass.set_bind_group(0, &k.bind, &[]);
            for _ in 0..STEPS_PER_SUBMIT {
                pass.dispatch_workgroups(x, y, 1);
            }
        }
        let start = Instant::now();
        queue.submit([encoder.finish()]);
        device.poll(wgpu::PollType::wait_indefinitely()).expect("poll");
        start.elapsed().as_secs_f64() / STEPS_PER_SUBMIT as f64
    };
    // Same work on the same data: compare the stored parameters after the first submit.
    for k in &kernels {
        run(k);
    }
    let differ = {
        let read = |b: &wgpu::Buffer| -> Vec<u16> {
            let staging = device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: b.size(),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut encoder = device.create_command_encoder(&Default::default());
            encoder.copy_buffer_to_buffer(b, 0, &staging, 0, b.size());
            queue.submit([encoder.finish()]);
            staging.slice(..).map_async(wgpu::MapMode::Read, |r| r.expect("map"));
            device.poll(wgpu::PollType::wait_indefinitely()).expect("poll");
            bytemuck::cast_slice(&staging.get_mapped_range(..).expect("mapped")).to_vec()
        };
        let (a, b) = (read(&kernels[0].p), read(&kernels[1].p));
        a.iter().zip(&b).filter(|(a, b)| a != b).count()
    };
    let mut times = [Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        for (k, t) in kernels.iter().zip(&mut times) {
            t.push(run(k));
        }
    }
    let bytes = len as f64 * (2.0 + 2.0 + 2.0 + 4.0 * 4.0); // read p, g, m, v; write p, m, v
    println!(
        "{} ({:?}), 2^{log2} f16 parameters, AdamW-shaped update, {ROUNDS} interleaved rounds",
        info.name, info.backend
    );
    for (name, t) in ["packed u32 words (the crate's)", "native f16 (SHADER_F16)"].iter().zip(&mut times) {
        t.sort_by(f64::total_cmp);
        let median = t[ROUNDS / 2];
        println!(
            "  {name:32} median {:8.3} ms/step  [{:.3} … {:.3}]  {:7.1} GB/s",
            median * 1e3,
            t[0] * 1e3,
            t[ROUNDS - 1] * 1e3,
            bytes / median / 1e9
        );
    }
    let ratio = times[0][ROUNDS / 2] / times[1][ROUNDS / 2];
    println!(
        "  native / packed speed: {ratio:.3}×; stored parameters whose bits differ after {STEPS_PER_SUBMIT} steps: {differ} of {len}"
    );
}

/// f32 → f16 bits, to nearest even (values here are normal and in range).
fn f16_bits(x: f32) -> u16 {
    wgpu_optim::ElementFormat::F16.encode(x)
}
