//! Many tensors: parameter groups over separate buffers or one arena, GPT-2's 148 tensors,
//! sharded steps, per-group reconfiguration.

mod common;

use common::*;
use wgpu_optim::{AdamW, CpuOptimizer, Error, GpuContext, GpuOptimizer, GpuTensor, Optimizer, ParamGroup, ParamGroups};

/// Tensors of a model: host values, and which group (0: decay, matrices; 1: no decay).
struct Model {
    lens: Vec<usize>,
    group: Vec<usize>,
}

impl Model {
    /// GPT-2's 148 tensors at width 32 (vocabulary 256, context 64): token and position
    /// embeddings, 12 layers of (ln_1 w, b; qkv w, b; proj w, b; ln_2 w, b; fc w, b; proj w,
    /// b), ln_f (w, b). Matrices go to group 0, vectors to group 1.
    fn gpt2() -> Self {
        let d = 32;
        let layer = [(d, 1), (d, 1), (d * 3 * d, 0), (3 * d, 1), (d * d, 0), (d, 1)];
        let mlp = [(d, 1), (d, 1), (d * 4 * d, 0), (4 * d, 1), (4 * d * d, 0), (d, 1)];
        let per_layer = layer.into_iter().chain(mlp);
        let tensors: Vec<(usize, usize)> = [(256 * d, 0), (64 * d, 0)]
            .into_iter()
            .chain((0..12).flat_map(|_| per_layer.clone()))
            .chain([(d, 1), (d, 1)])
            .collect();
        assert_eq!(tensors.len(), 148);
        Model { lens: tensors.iter().map(|t| t.0).collect(), group: tensors.iter().map(|t| t.1).collect() }
    }
    /// Host values of tensor `t` (params or step-`k` grads), distinct per tensor.
    fn values(&self, t: usize, k: usize) -> Vec<f32> {
        (0..self.lens[t]).map(|i| if k == 0 { param(i + 97 * t) } else { grad(i + 89 * t, k) }).collect()
    }
}

fn configs() -> [AdamW; 2] {
    [AdamW::new(1e-2).with_weight_decay(0.1), AdamW::new(1e-2).with_weight_decay(0.0)]
}

/// Element offsets of each tensor in an arena ordered by group, each start a multiple of 64
/// elements (256 bytes) so that it can be bound; and each group's [start, end).
fn arena_layout(m: &Model) -> (Vec<usize>, Vec<(usize, usize)>, usize) {
    let mut offsets = vec![0; m.lens.len()];
    let mut spans = Vec::new();
    let mut at = 0;
    for g in 0..2 {
        let start = at;
        for t in (0..m.lens.len()).filter(|&t| m.group[t] == g) {
            offsets[t] = at;
            at = (at + m.lens[t]).next_multiple_of(64);
        }
        spans.push((start, at));
    }
    (offsets, spans, at)
}

#[test]
fn gpt2_shaped_148_tensors_separate_and_arena_agree_bit_for_bit_and_match_the_cpu() {
    // Small buffers so that the arena spans several physical buffers and sub-ranges.
    let ctx = ctx_with(|t| {
        t.segment_bytes = 16 << 10;
        t.buffer_bytes = 32 << 10;
    });
    let m = Model::gpt2();
    let n = m.lens.len();
    let steps = 3;

    // Separate buffers: one tensor each.
    let sep_p: Vec<GpuTensor> = (0..n).map(|t| GpuTensor::from_slice(&ctx, &m.values(t, 0)).unwrap()).collect();
    let sep_g: Vec<GpuTensor> = (0..n).map(|t| GpuTensor::zeros(&ctx, m.lens[t]).unwrap()).collect();
    fn group_of<'a>(m: &Model, g: usize, ts: &'a [GpuTensor]) -> Vec<&'a GpuTensor> {
        (0..ts.len()).filter(|&t| m.group[t] == g).map(|t| &ts[t]).collect()
    }
    let mut separate = ParamGroups::new(
        &ctx,
        (0..2)
            .map(|g| ParamGroup {
                optimizer: configs()[g].clone().into(),
                params: group_of(&m, g, &sep_p),
                grads: group_of(&m, g, &sep_g),
                shapes: Vec::new(),
                precision: Default::default(),
            })
            .collect(),
    )
    .unwrap();

    // One arena, tensors at aligned offsets, each group one contiguous slice.
    let (offsets, spans, total) = arena_layout(&m);
    let mut host = vec![0.0f32; total];
    for t in 0..n {
        host[offsets[t]..offsets[t] + m.lens[t]].copy_from_slice(&m.values(t, 0));
    }
    let arena_p = GpuTensor::from_slice(&ctx, &host).unwrap();
    let arena_g = GpuTensor::zeros(&ctx, total).unwrap();
    let buffers = {
        let mut b: Vec<&wgpu::Buffer> = Vec::new();
        for s in arena_p.segments() {
            if !b.contains(&&s.buffer) {
                b.push(&s.buffer);
            }
        }
        b.len()
    };
    assert!(buffers > 1, "the arena should span several buffers");
    let slices: Vec<(GpuTensor, GpuTensor)> = spans
        .iter()
        .map(|&(a, b)| (arena_p.slice(&ctx, a, b - a).unwrap(), arena_g.slice(&ctx, a, b - a).unwrap()))
        .collect();
    let mut arena = ParamGroups::new(
        &ctx,
        (0..2)
            .map(|g| ParamGroup {
                optimizer: configs()[g].clone().into(),
                params: vec![&slices[g].0],
                grads: vec![&slices[g].1],
                shapes: Vec::new(),
                precision: Default::default(),
            })
            .collect(),
    )
    .unwrap();

    // The CPU reference: one optimizer per group over its tensors back to back.
    let cat =
        |g: usize, k: usize| -> Vec<f32> { (0..n).filter(|&t| m.group[t] == g).flat_map(|t| m.values(t, k)).collect() };
    let mut cpu: Vec<CpuOptimizer> =
        (0..2).map(|g| CpuOptimizer::new(configs()[g].clone(), &cat(g, 0)).unwrap()).collect();

    for k in 1..=steps {
        let mut arena_grads = vec![0.0f32; total];
        for t in 0..n {
            let g = m.values(t, k);
            sep_g[t].write(&ctx, &g).unwrap();
            arena_grads[offsets[t]..offsets[t] + m.lens[t]].copy_from_slice(&g);
        }
        arena_g.write(&ctx, &arena_grads).unwrap();
        separate.run(1).unwrap();
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        arena.record(&mut encoder, 1).unwrap();
        ctx.queue().submit([encoder.finish()]);
        for (g, c) in cpu.iter_mut().enumerate() {
            c.step(&cat(g, k)).unwrap();
        }
    }

    let arena_now = arena_p.read(&ctx).unwrap();
    let mut at = [0usize; 2];
    for t in 0..n {
        let sep = sep_p[t].read(&ctx).unwrap();
        assert_eq!(sep, arena_now[offsets[t]..offsets[t] + m.lens[t]], "tensor {t}: separate vs arena");
        let g = m.group[t];
        let want = &cpu[g].params().as_slice().unwrap()[at[g]..at[g] + m.lens[t]];
        assert_close(&format!("tensor {t}"), &sep, want, 3e-2, steps, AdamW::default().kernel().step_error_budget);
        at[g] += m.lens[t];
    }
    assert_eq!(separate.groups()[0].step_count(), steps as u64);
}

#[test]
fn two_half_shards_equal_one_full_step() {
    let ctx = ctx();
    let n = 10_000;
    let half = 79 * 64; // a shard boundary on a 256-byte boundary
    let full_p = GpuTensor::from_slice(&ctx, &params(n)).unwrap();
    let full_g = GpuTensor::zeros(&ctx, n).unwrap();
    let shard_p = GpuTensor::from_slice(&ctx, &params(n)).unwrap();
    let shard_g = GpuTensor::zeros(&ctx, n).unwrap();
    let mut full = GpuOptimizer::from_tensors(&ctx, AdamW::new(1e-2), full_p.clone(), full_g.clone()).unwrap();
    let mut shards: Vec<GpuOptimizer> = [(0, half), (half, n - half)]
        .iter()
        .map(|&(o, l)| {
            let (p, g) = (shard_p.slice(&ctx, o, l).unwrap(), shard_g.slice(&ctx, o, l).unwrap());
            GpuOptimizer::from_tensors(&ctx, AdamW::new(1e-2), p, g).unwrap()
        })
        .collect();
    for k in 1..=4 {
        full_g.write(&ctx, &grads(n, k)).unwrap();
        shard_g.write(&ctx, &grads(n, k)).unwrap();
        full.run(1).unwrap();
        for s in &mut shards {
            s.run(1).unwrap();
        }
    }
    assert_eq!(full_p.read(&ctx).unwrap(), shard_p.read(&ctx).unwrap());
    let m_full = full.read_state("exp_avg").unwrap().to_vec();
    let m_shards: Vec<f32> = shards.iter().flat_map(|s| s.read_state("exp_avg").unwrap().to_vec()).collect();
    assert_eq!(m_full, m_shards);
    // A shard must start where it can be bound.
    assert!(matches!(shard_p.slice(&ctx, 3, 100), Err(Error::BadBufferRange { .. })));
    assert!(matches!(shard_p.slice(&ctx, 64, n), Err(Error::BadBufferRange { .. })));
}

#[test]
fn groups_can_be_reconfigured_between_steps() {
    let ctx: GpuContext = ctx();
    let n = 3000;
    let p = GpuTensor::from_slice(&ctx, &params(n)).unwrap();
    let g = GpuTensor::zeros(&ctx, n).unwrap();
    let mut groups = ParamGroups::new(
        &ctx,
        vec![ParamGroup {
            optimizer: AdamW::new(1e-2).into(),
            params: vec![&p],
            grads: vec![&g],
            shapes: Vec::new(),
            precision: Default::default(),
        }],
    )
    .unwrap();
    let mut cpu = CpuOptimizer::new(AdamW::new(1e-2), &params(n)).unwrap();
    let steps = 4;
    for k in 1..=steps {
        if k == 3 {
            // A lower learning rate and a new weight decay from step 3 on; the moments carry on.
            let next = AdamW::new(2e-3).with_weight_decay(0.5);
            groups.reconfigure(0, next.clone()).unwrap();
            cpu.reconfigure(next).unwrap();
        }
        g.write(&ctx, &grads(n, k)).unwrap();
        groups.run(1).unwrap();
        cpu.step(&grads(n, k)).unwrap();
    }
    assert_eq!(groups.groups()[0].step_count(), steps as u64);
    assert_close(
        "reconfigured",
        p.read(&ctx).unwrap().as_slice(),
        cpu.params().as_slice().unwrap(),
        1e-2,
        steps,
        AdamW::default().kernel().step_error_budget,
    );
    // Turning AMSGrad on would need a state tensor the group does not have.
    assert!(matches!(groups.reconfigure(0, AdamW::new(1e-2).with_amsgrad(true)), Err(Error::Reconfigure(_))));
    assert!(matches!(groups.reconfigure(0, wgpu_optim::Sgd::new(0.1)), Err(Error::Reconfigure(_))));
    assert!(groups.reconfigure(0, AdamW::new(-1.0)).is_err());
    assert!(groups.reconfigure(1, AdamW::new(1e-2)).is_err());
}

#[test]
fn an_arena_holds_a_models_tensors_aligned_and_one_optimizer_steps_them_all() {
    // Small sub-ranges: the arena spans several buffers.
    let ctx = ctx_with(|t| {
        t.segment_bytes = 4096;
        t.buffer_bytes = 8192;
    });
    let lens = [5usize, 130, 64, 1, 2000, 77];
    let (p, views) = GpuTensor::arena(&ctx, &lens).unwrap();
    let (g, grad_views) = GpuTensor::arena(&ctx, &lens).unwrap();
    let align = u64::from(ctx.limits().min_storage_buffer_offset_alignment);
    assert_eq!(views.iter().map(GpuTensor::len).collect::<Vec<_>>(), lens);
    assert!(views.iter().flat_map(|v| v.segments()).all(|s| s.offset % align == 0));
    let host_p: Vec<Vec<f32>> = lens.iter().enumerate().map(|(t, &n)| params(n + 3 * t)[3 * t..].to_vec()).collect();
    let host_g: Vec<Vec<f32>> = lens.iter().map(|&n| grads(n, 1)).collect();
    for (t, (v, gv)) in views.iter().zip(&grad_views).enumerate() {
        v.write(&ctx, &host_p[t]).unwrap();
        gv.write(&ctx, &host_g[t]).unwrap();
    }
    let config = AdamW::new(1e-2).with_weight_decay(0.1);
    let mut gpu = GpuOptimizer::from_tensors(&ctx, config.clone(), p.clone(), g).unwrap();
    gpu.run(3).unwrap();
    for (t, v) in views.iter().enumerate() {
        let mut cpu = CpuOptimizer::new(config.clone(), &host_p[t]).unwrap();
        for _ in 0..3 {
            cpu.step(&host_g[t]).unwrap();
        }
        let budget = AdamW::default().kernel().step_error_budget;
        assert_close("arena view", &v.read(&ctx).unwrap(), cpu.params().as_slice().unwrap(), 1e-1, 3, budget);
    }
    // Everything outside the views is a gap, still zero.
    let whole = p.read(&ctx).unwrap();
    let mut inside = vec![false; whole.len()];
    let mut start = 0;
    for &n in &lens {
        inside[start..start + n].iter_mut().for_each(|x| *x = true);
        start += n.next_multiple_of((align / 4) as usize);
    }
    assert!(whole.iter().zip(&inside).all(|(x, &i)| i || *x == 0.0));
    assert!(inside.iter().any(|&i| !i), "the test should have gaps");
}

#[test]
fn add_param_group_equals_building_the_groups_together() {
    let ctx = ctx();
    let lens = [3000usize, 700, 1500];
    let make = |ctx: &GpuContext| -> (Vec<GpuTensor>, Vec<GpuTensor>) {
        let p =
            lens.iter().enumerate().map(|(t, &n)| GpuTensor::from_slice(ctx, &params(n + t)[t..]).unwrap()).collect();
        let g = lens.iter().map(|&n| GpuTensor::zeros(ctx, n).unwrap()).collect();
        (p, g)
    };
    let control = wgpu_optim::GradControl { max_norm: Some(2.0), ..Default::default() };
    let (p1, g1) = make(&ctx);
    let (p2, g2) = make(&ctx);
    fn group<'a>(
        p: &'a [GpuTensor],
        g: &'a [GpuTensor],
        i: std::ops::Range<usize>,
        o: Box<dyn Optimizer>,
    ) -> ParamGroup<'a> {
        ParamGroup {
            optimizer: o,
            params: p[i.clone()].iter().collect(),
            grads: g[i].iter().collect(),
            shapes: Vec::new(),
            precision: Default::default(),
        }
    }
    let lamb = || -> Box<dyn Optimizer> { wgpu_optim::Lamb::new(1e-2).into() };
    let mut together =
        ParamGroups::new(&ctx, vec![group(&p1, &g1, 0..2, AdamW::new(1e-2).into()), group(&p1, &g1, 2..3, lamb())])
            .unwrap();
    together.set_grad_control(Some(control)).unwrap();
    let mut added = ParamGroups::new(&ctx, vec![group(&p2, &g2, 0..2, AdamW::new(1e-2).into())]).unwrap();
    added.set_grad_control(Some(control)).unwrap();
    added.add_param_group(group(&p2, &g2, 2..3, lamb())).unwrap();
    assert_eq!(added.groups().len(), 2);
    for k in 1..=3 {
        for (t, &n) in lens.iter().enumerate() {
            let h: Vec<f32> = grads(n + 5 * t, k)[..n].iter().map(|x| x * 10.0).collect();
            g1[t].write(&ctx, &h).unwrap();
            g2[t].write(&ctx, &h).unwrap();
        }
        together.run(1).unwrap();
        added.run(1).unwrap();
        assert_eq!(together.read_grad_control().unwrap(), added.read_grad_control().unwrap(), "step {k}");
    }
    assert!(added.read_grad_control().unwrap().unwrap()[1] < 1.0, "the norm covers the added group and clips");
    for t in 0..3 {
        assert_eq!(p1[t].read(&ctx).unwrap(), p2[t].read(&ctx).unwrap(), "tensor {t}");
    }
}

/// Distinct physical buffers among a tensor's sub-ranges.
fn distinct_buffers(t: &GpuTensor) -> usize {
    let mut b: Vec<&wgpu::Buffer> = t.segments().iter().map(|s| &s.buffer).collect();
    b.sort();
    b.dedup();
    b.len()
}

#[test]
fn arena_views_handed_over_one_by_one_step_as_one_dispatch_and_as_the_arena_does() {
    // Lengths in multiples of 64 elements, so that the views of an arena lie end to end on
    // every device (alignment at most 256 bytes).
    let lens: Vec<usize> = (0..24).map(|i| 64 * (1 + (i * 7) % 11)).collect();
    let total: usize = lens.iter().sum();
    let config = AdamW::new(1e-2).with_weight_decay(0.1);
    let steps = 3;
    let ctx = ctx();
    let (p_whole, p_views) = GpuTensor::arena(&ctx, &lens).unwrap();
    let (g_whole, g_views) = GpuTensor::arena(&ctx, &lens).unwrap();
    assert_eq!(p_whole.len(), total, "views end to end");
    p_whole.write(&ctx, &params(total)).unwrap();
    let mut views = ParamGroups::new(
        &ctx,
        vec![ParamGroup::new(config.clone(), p_views.iter().collect(), g_views.iter().collect())],
    )
    .unwrap();
    // The reference: the same values in tensors of their own, stepped as the whole arena.
    let (p_ref, g_ref) = (GpuTensor::from_slice(&ctx, &params(total)).unwrap(), GpuTensor::zeros(&ctx, total).unwrap());
    let mut whole = GpuOptimizer::from_tensors(&ctx, config.clone(), p_ref.clone(), g_ref.clone()).unwrap();
    let mut cpu = CpuOptimizer::new(config, &params(total)).unwrap();
    for k in 1..=steps {
        g_whole.write(&ctx, &grads(total, k)).unwrap();
        g_ref.write(&ctx, &grads(total, k)).unwrap();
        views.run(1).unwrap();
        whole.run(1).unwrap();
        cpu.step(&grads(total, k)).unwrap();
    }
    let group = &views.groups()[0];
    // 24 views in one buffer: one sub-range, one dispatch per step; state alike.
    assert_eq!(group.params().segments().len(), 1, "views merged into one sub-range");
    assert_eq!(group.state_tensor("exp_avg").unwrap().segments().len(), 1);
    let (got, want) = (p_whole.read(&ctx).unwrap(), whole.read_params().unwrap().to_vec());
    assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "views vs whole: bit for bit");
    assert_eq!(group.read_state("exp_avg").unwrap().to_vec(), whole.read_state("exp_avg").unwrap().to_vec());
    let change = max_change(&got, &params(total));
    assert_close("views vs cpu", &got, cpu.params().as_slice().unwrap(), change, steps, 4.0);

    // Views with gaps between them (every other tensor) are not merged: the gaps are memory
    // no optimizer was given, and stay as they were.
    let every_other: Vec<&GpuTensor> = p_views.iter().step_by(2).collect();
    let every_other_g: Vec<&GpuTensor> = g_views.iter().step_by(2).collect();
    let before = p_whole.read(&ctx).unwrap();
    let mut gaps = ParamGroups::new(&ctx, vec![ParamGroup::new(AdamW::new(1e-2), every_other, every_other_g)]).unwrap();
    gaps.run(1).unwrap();
    assert_eq!(gaps.groups()[0].params().segments().len(), 12, "no merge across a gap");
    let after = p_whole.read(&ctx).unwrap();
    let starts = GpuTensor::arena_starts(&ctx, &lens);
    for (t, (&s, &n)) in starts.iter().zip(&lens).enumerate().filter(|(t, _)| t % 2 == 1) {
        assert_eq!(&after[s..s + n], &before[s..s + n], "tensor {t}, not in the group, is untouched");
    }

    // A merged sub-range never exceeds one binding's worth of elements.
    let small = ctx_with(|t| t.segment_bytes = 4 << 10);
    let (_, spv) = GpuTensor::arena(&small, &lens).unwrap();
    let (_, sgv) = GpuTensor::arena(&small, &lens).unwrap();
    let limited =
        ParamGroups::new(&small, vec![ParamGroup::new(AdamW::new(1e-2), spv.iter().collect(), sgv.iter().collect())])
            .unwrap();
    let merged = limited.groups()[0].params().segment_lens();
    assert!(merged.iter().all(|&n| n <= 1024), "{merged:?}");
    assert!(merged.len() < lens.len() && merged.iter().sum::<usize>() == total, "{merged:?}");
}

#[test]
fn separate_tensors_get_state_in_separate_buffers() {
    // A written buffer two tensors' dispatches share is a barrier between them on the GPU.
    let ctx = ctx();
    let lens = [300, 64, 1000, 7];
    let p: Vec<GpuTensor> = lens.iter().map(|&n| GpuTensor::from_slice(&ctx, &params(n)).unwrap()).collect();
    let g: Vec<GpuTensor> = lens.iter().map(|&n| GpuTensor::zeros(&ctx, n).unwrap()).collect();
    let mut groups =
        ParamGroups::new(&ctx, vec![ParamGroup::new(AdamW::new(1e-2), p.iter().collect(), g.iter().collect())])
            .unwrap();
    groups.run(2).unwrap();
    let group = &groups.groups()[0];
    assert_eq!(group.params().segments().len(), lens.len(), "separate buffers are not merged");
    for name in ["exp_avg", "exp_avg_sq"] {
        let state = group.state_tensor(name).unwrap();
        assert_eq!(state.segment_lens(), lens.to_vec());
        assert_eq!(distinct_buffers(state), lens.len(), "{name}: a buffer per tensor");
    }
    // The same values as tensors in one buffer.
    let (_, whole_p) = GpuTensor::arena(&ctx, &lens).unwrap();
    let (_, whole_g) = GpuTensor::arena(&ctx, &lens).unwrap();
    for (t, &n) in whole_p.iter().zip(&lens) {
        t.write(&ctx, &params(n)).unwrap();
    }
    let mut packed = ParamGroups::new(
        &ctx,
        vec![ParamGroup::new(AdamW::new(1e-2), whole_p.iter().collect(), whole_g.iter().collect())],
    )
    .unwrap();
    packed.run(2).unwrap();
    for (a, b) in p.iter().zip(&whole_p) {
        assert_eq!(a.read(&ctx).unwrap(), b.read(&ctx).unwrap());
    }
}
