//! GPU vs CPU reference, every optimizer × variant, over awkward lengths and layouts.
//! Runs on any adapter; CI runs it on Mesa's lavapipe.

mod common;

use common::*;
use wgpu_optim::{CpuOptimizer, GpuContext, GpuOptimizer, GpuTensor, Optimizer};

/// Runs `steps` steps of `opt` on both sides from the same inputs and compares the
/// parameters and every state tensor. Returns the worst error in units of ε·scale.
fn parity(ctx: &GpuContext, label: &str, opt: &dyn Optimizer, n: usize, steps: usize) -> f32 {
    let p0 = params(n);
    let mut gpu = GpuOptimizer::new(ctx, opt.clone_box(), &p0).unwrap();
    let mut cpu = CpuOptimizer::new(opt.clone_box(), &p0).unwrap();
    let names: Vec<&str> = cpu.state().map(|(s, _)| s.torch_name).collect();
    // Largest per-step change of p and of each state tensor, for the tolerance.
    let mut change = vec![0.0f32; 1 + names.len()];
    for k in 1..=steps {
        let g = grads(n, k);
        let before: Vec<Vec<f32>> = std::iter::once(cpu.params().to_vec())
            .chain(names.iter().map(|s| cpu.state_tensor(s).unwrap().to_vec()))
            .collect();
        gpu.step(&g).unwrap();
        cpu.step(&g).unwrap();
        change[0] = change[0].max(max_change(&before[0], cpu.params().as_slice().unwrap()));
        for (j, s) in names.iter().enumerate() {
            change[j + 1] =
                change[j + 1].max(max_change(&before[j + 1], cpu.state_tensor(s).unwrap().as_slice().unwrap()));
        }
    }
    assert_eq!(gpu.step_count(), steps as u64);
    let budget = opt.kernel().step_error_budget;
    let mut worst = assert_close(
        &format!("{label} n={n} params"),
        gpu.read_params().unwrap().as_slice().unwrap(),
        cpu.params().as_slice().unwrap(),
        change[0],
        steps,
        budget,
    );
    for (j, s) in names.iter().enumerate() {
        worst = worst.max(assert_close(
            &format!("{label} n={n} {s}"),
            gpu.read_state(s).unwrap().as_slice().unwrap(),
            cpu.state_tensor(s).unwrap().as_slice().unwrap(),
            change[j + 1],
            steps,
            budget,
        ));
    }
    worst
}

#[test]
fn every_variant_matches_the_cpu_reference_on_awkward_lengths() {
    let ctx = ctx();
    let mut worst = 0.0f32;
    for (label, opt) in variants() {
        // Eight steps: RAdam and AdaBelief switch to their rectified branch at step 6.
        for n in [1, 3, 4, 5, 1023, 4097] {
            worst = worst.max(parity(&ctx, label, &*opt, n, 8));
        }
    }
    eprintln!("worst GPU-vs-CPU error: {worst} ε·scale on {}", ctx.adapter_info().name);
}

#[test]
fn grids_wider_than_65535_workgroups_fold_into_y() {
    // One invocation per workgroup: 65536 vec4s need 65536 workgroups, one more than a
    // grid dimension holds, plus a tail of 3 — the same code path as 2^26 elements at the
    // default workgroup size, on a fraction of the data.
    let ctx = ctx_with(|t| {
        t.workgroup_size = 1;
        t.items_per_invocation = 1;
    });
    assert!(ctx.tuning().max_workgroups_per_dimension <= 65535);
    let n = 4 * 65536 + 3;
    for (label, opt) in variants() {
        parity(&ctx, label, &*opt, n, 3);
    }
}

#[test]
fn default_workgroup_size_covers_a_tensor_needing_more_than_65535_workgroups() {
    // One vec4 per invocation, so that 2^26 elements need 65536 workgroups of 256.
    let ctx = ctx_with(|t| t.items_per_invocation = 1);
    let wg = ctx.tuning().workgroup_size as usize;
    let n = 4 * wg * 65536 + 5;
    parity(&ctx, "adamw", &wgpu_optim::AdamW::new(1e-2), n, 2);
}

/// Sub-ranges of 256 elements (or the device's alignment), two per physical buffer.
fn small_segments() -> GpuContext {
    ctx_with(|t| {
        let align = u64::from(ctx().limits().min_storage_buffer_offset_alignment).max(16);
        t.segment_bytes = 1024u64.next_multiple_of(align);
        t.buffer_bytes = 2 * t.segment_bytes;
    })
}

#[test]
fn tensors_spanning_several_sub_ranges_and_buffers_match() {
    let ctx = small_segments();
    let seg = ctx.tuning().segment_len();
    let n = 5 * seg + 7;
    let t = GpuTensor::zeros(&ctx, n).unwrap();
    assert_eq!(t.segments().len(), 6);
    let mut buffers: Vec<&wgpu::Buffer> = Vec::new();
    for s in t.segments() {
        if !buffers.contains(&&s.buffer) {
            buffers.push(&s.buffer);
        }
    }
    assert_eq!(buffers.len(), 3, "two sub-ranges per physical buffer");
    for (label, opt) in variants() {
        parity(&ctx, label, &*opt, n, 8);
    }
}

#[test]
fn k_steps_in_one_submit_equal_k_separate_steps() {
    let ctx = small_segments();
    let n = 3 * ctx.tuning().segment_len() + 2;
    let g = grads(n, 1);
    for (label, opt) in variants() {
        let mut one = GpuOptimizer::new(&ctx, opt.clone_box(), &params(n)).unwrap();
        let mut many = GpuOptimizer::new(&ctx, opt.clone_box(), &params(n)).unwrap();
        for _ in 0..7 {
            one.step(&g).unwrap();
        }
        many.grads().write(&ctx, &g).unwrap();
        many.run(7).unwrap();
        assert_eq!(one.read_params().unwrap(), many.read_params().unwrap(), "{label}");
        for (slot, _) in one.state() {
            assert_eq!(one.read_state(slot.role).unwrap(), many.read_state(slot.role).unwrap(), "{label}");
        }
    }
}

#[test]
fn more_steps_than_scalar_slots_wrap_the_ring() {
    // 300 steps in one call: two submits, the second wrapping the ring of scalar slots,
    // then 200 more. Each step's scalars must still be its own.
    let ctx = ctx();
    let n = 37;
    let opt = wgpu_optim::Adam::new(1e-3);
    let mut gpu = GpuOptimizer::new(&ctx, opt.clone(), &params(n)).unwrap();
    let mut cpu = CpuOptimizer::new(opt, &params(n)).unwrap();
    let g = grads(n, 1);
    gpu.grads().write(&ctx, &g).unwrap();
    gpu.run(300).unwrap();
    gpu.run(200).unwrap();
    for _ in 0..500 {
        cpu.step(&g).unwrap();
    }
    assert_eq!(gpu.step_count(), 500);
    // With a constant gradient every step moves p by about lr; 500 steps of budget.
    assert_close(
        "ring",
        gpu.read_params().unwrap().as_slice().unwrap(),
        cpu.params().as_slice().unwrap(),
        1e-3,
        500,
        wgpu_optim::Adam::default().kernel().step_error_budget,
    );
}

#[test]
fn caller_buffers_and_encoder_give_the_same_bits_as_owned_tensors() {
    let ctx = small_segments();
    let seg = ctx.tuning().segment_len();
    let n = 2 * seg + 5;
    let align = u64::from(ctx.limits().min_storage_buffer_offset_alignment).max(256);
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
    // The caller keeps params and grads in one buffer of their own: params at `align`,
    // grads after them, both at aligned offsets.
    let grads_at = (align + n as u64 * 4).next_multiple_of(align);
    let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("caller's buffer"),
        size: grads_at + n as u64 * 4,
        usage,
        mapped_at_creation: false,
    });
    let p = GpuTensor::from_buffer(&ctx, &buffer, align, n).unwrap();
    let g = GpuTensor::from_buffer(&ctx, &buffer, grads_at, n).unwrap();
    assert_eq!(p.segments().len(), 3);
    p.write(&ctx, &params(n)).unwrap();
    for (label, opt) in variants() {
        p.write(&ctx, &params(n)).unwrap();
        let mut theirs = GpuOptimizer::from_tensors(&ctx, opt.clone_box(), p.clone(), g.clone()).unwrap();
        let mut ours = GpuOptimizer::new(&ctx, opt.clone_box(), &params(n)).unwrap();
        for k in 1..=3 {
            g.write(&ctx, &grads(n, k)).unwrap();
            let mut encoder = ctx.device().create_command_encoder(&Default::default());
            theirs.record(&mut encoder, 1).unwrap();
            ctx.queue().submit([encoder.finish()]);
            ours.step(&grads(n, k)).unwrap();
        }
        assert_eq!(p.read(&ctx).unwrap(), ours.read_params().unwrap().to_vec(), "{label}");
    }
}
