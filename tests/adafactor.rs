//! Adafactor: its reductions alone, GPU vs CPU over awkward shapes and layouts, its state
//! size and its errors.

mod common;

use common::*;
use wgpu_optim::{Adafactor, CpuOptimizer, Error, GpuContext, GpuOptimizer, Threads};

/// The budget of one Adafactor step, in ε of (|x| + per-step change): the element-wise part
/// (decay mul 1, V: mul 1 + div 3, max, sqrt 5, 1/x 3, mul 1, fma 2 = 16) plus the scalars
/// alpha and coef, whose sums the GPU forms as f32 trees (≤ log2(n) + 1 ε relative for the
/// sizes here, ≤ 20) and the CPU in f64; a sum's relative error reaches the update at half
/// weight through the square root: 16 + 10 + 10 = 36.
const BUDGET: f32 = 36.0;

fn shape_len(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// `steps` steps on both sides from the same inputs; compares parameters and state.
fn parity(ctx: &GpuContext, config: &Adafactor, shape: &[usize], steps: usize) {
    let n = shape_len(shape);
    let mut gpu = GpuOptimizer::with_shape(ctx, config.clone(), &params(n), shape).unwrap();
    let mut cpu = CpuOptimizer::with_shape(config.clone(), &params(n), shape).unwrap();
    let mut change = 0.0f32;
    for k in 1..=steps {
        let before = cpu.params().to_vec();
        gpu.step(&grads(n, k)).unwrap();
        cpu.step(&grads(n, k)).unwrap();
        change = change.max(max_change(&before, cpu.params().as_slice().unwrap()));
    }
    let label = format!("adafactor {shape:?}");
    assert_close(
        &label,
        gpu.read_params().unwrap().as_slice().unwrap(),
        cpu.params().as_slice().unwrap(),
        change,
        steps,
        BUDGET,
    );
    for name in ["row_var", "col_var", "variance"] {
        if let Some(want) = cpu.state_tensor(name) {
            let got = gpu.read_state(name).unwrap();
            // The state is a lerp of sums of g²: a few ε relative per step.
            assert_close(
                &format!("{label} {name}"),
                got.as_slice().unwrap(),
                want.as_slice().unwrap(),
                0.0,
                steps,
                24.0,
            );
        }
    }
}

#[test]
fn reductions_alone_match_the_cpu_and_repeat_bit_for_bit() {
    // At step 1 the moment weight is 1^-0.8 = 1, so row_var = ‖g_row‖² / N and col_var =
    // ‖g_col‖² / M exactly: the GPU's row and column reductions, read back alone. A row of
    // 300 spans two rounds of a 256-wide workgroup; a column of 70 two blocks of 64 rows.
    let ctx = ctx();
    let shape = [70, 300];
    let n = shape_len(&shape);
    let config = Adafactor::new(1e-2);
    let mut cpu = CpuOptimizer::with_shape(config.clone(), &params(n), &shape).unwrap();
    cpu.step(&grads(n, 1)).unwrap();
    let mut runs = Vec::new();
    for _ in 0..2 {
        let mut gpu = GpuOptimizer::with_shape(&ctx, config.clone(), &params(n), &shape).unwrap();
        gpu.step(&grads(n, 1)).unwrap();
        runs.push((gpu.read_state("row_var").unwrap(), gpu.read_state("col_var").unwrap(), gpu.read_params().unwrap()));
    }
    // f32 sums of up to 300 squares against the CPU's f64 sum: a tree adds ≤ log2(300) + 1
    // ≈ 10 roundings, a 64-row block ≤ 64 then ≤ 2 more; then sqrt, square, divide (~6 ε).
    let (row_var, col_var, _) = &runs[0];
    assert_close(
        "row sums",
        row_var.as_slice().unwrap(),
        cpu.state_tensor("row_var").unwrap().as_slice().unwrap(),
        0.0,
        1,
        16.0,
    );
    assert_close(
        "col sums",
        col_var.as_slice().unwrap(),
        cpu.state_tensor("col_var").unwrap().as_slice().unwrap(),
        0.0,
        1,
        72.0,
    );
    // Deterministic: the same bits run to run.
    let bits = |a: &ndarray::Array1<f32>| a.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&runs[0].0), bits(&runs[1].0));
    assert_eq!(bits(&runs[0].1), bits(&runs[1].1));
    assert_eq!(bits(&runs[0].2), bits(&runs[1].2));
}

#[test]
fn gpu_matches_cpu_over_awkward_shapes() {
    let ctx = ctx();
    let configs = [
        Adafactor::new(1e-2),
        Adafactor::new(0.5).with_weight_decay(0.1).with_maximize(true).with_d(1.5).with_eps(Some(1e-3), 1e-2),
    ];
    for config in &configs {
        for shape in [&[1][..], &[3], &[5], &[4097], &[3, 5], &[1, 7], &[70, 300], &[2, 3, 33, 4]] {
            parity(&ctx, config, shape, 8);
        }
    }
}

#[test]
fn tensors_spanning_several_sub_ranges_match() {
    // 256-element sub-ranges: a vector of 1500 spans six; 6 matrices of 7×9 (63 elements)
    // are packed four to a sub-range, two sub-ranges in all.
    let ctx = ctx_with(|t| {
        let align = u64::from(ctx().limits().min_storage_buffer_offset_alignment).max(16);
        t.segment_bytes = 1024u64.next_multiple_of(align);
        t.buffer_bytes = 2 * t.segment_bytes;
    });
    let config = Adafactor::new(1e-2).with_weight_decay(0.01);
    for shape in [&[1500][..], &[6, 7, 9], &[16, 16]] {
        parity(&ctx, &config, shape, 8);
    }
    let gpu = GpuOptimizer::with_shape(&ctx, config.clone(), &params(6 * 63), &[6, 7, 9]).unwrap();
    assert_eq!(gpu.params().segments().len(), 2);
    // A matrix larger than a sub-range is refused with a way out.
    match GpuOptimizer::with_shape(&ctx, config, &params(300), &[10, 30]) {
        Err(Error::OverLimit(m)) => assert!(m.contains("segment_bytes"), "{m}"),
        other => panic!("expected OverLimit, got {other:?}"),
    }
}

#[test]
fn more_than_65535_workgroups() {
    let ctx = ctx_with(|t| t.workgroup_size = 1);
    parity(&ctx, &Adafactor::new(1e-2), &[4 * 65536 + 3], 2);
    parity(&ctx, &Adafactor::new(1e-2), &[300, 1000], 2);
}

#[test]
fn factored_state_is_rows_plus_columns() {
    let ctx = ctx();
    let (b, m, n) = (3, 40, 50);
    let gpu = GpuOptimizer::with_shape(&ctx, Adafactor::default(), &params(b * m * n), &[b, m, n]).unwrap();
    assert_eq!(gpu.state().map(|(_, t)| t.len()).sum::<usize>(), b * (m + n));
    assert_eq!(gpu.read_state("row_var").unwrap().len(), b * m);
    assert_eq!(gpu.read_state("col_var").unwrap().len(), b * n);
    assert!(gpu.read_state("variance").is_err());
    let cpu = CpuOptimizer::with_shape(Adafactor::default(), &params(b * m * n), &[b, m, n]).unwrap();
    assert_eq!(cpu.state_tensor("row_var").unwrap().len() + cpu.state_tensor("col_var").unwrap().len(), b * (m + n));
    // Vectors keep one value per element.
    let v = GpuOptimizer::with_shape(&ctx, Adafactor::default(), &params(100), &[100]).unwrap();
    assert_eq!(v.state().map(|(_, t)| t.len()).sum::<usize>(), 100);
}

#[test]
fn k_steps_per_submit_equal_k_calls_and_parallel_equals_sequential() {
    let ctx = ctx();
    let shape = [2, 30, 20];
    let n = shape_len(&shape);
    let g = grads(n, 1);
    let mut one = GpuOptimizer::with_shape(&ctx, Adafactor::new(1e-2), &params(n), &shape).unwrap();
    let mut many = GpuOptimizer::with_shape(&ctx, Adafactor::new(1e-2), &params(n), &shape).unwrap();
    for _ in 0..5 {
        one.step(&g).unwrap();
    }
    many.grads().write(&ctx, &g).unwrap();
    many.run(5).unwrap();
    assert_eq!(one.read_params().unwrap(), many.read_params().unwrap());

    let mut seq = CpuOptimizer::with_shape(Adafactor::new(1e-2), &params(n), &shape).unwrap();
    let mut par =
        CpuOptimizer::with_shape(Adafactor::new(1e-2), &params(n), &shape).unwrap().with_threads(Threads::Parallel);
    for k in 1..=5 {
        seq.step(&grads(n, k)).unwrap();
        par.step(&grads(n, k)).unwrap();
    }
    assert_eq!(seq.params(), par.params());
}

#[test]
fn invalid_configurations_give_torchs_messages() {
    let msg = |c: Adafactor| match CpuOptimizer::with_shape(c, &[1.0f32], &[1]) {
        Err(Error::InvalidHyperParameter { message, .. }) => message,
        other => panic!("expected InvalidHyperParameter, got {other:?}"),
    };
    assert_eq!(msg(Adafactor::new(-1.0)), "Learning rate should be >= 0 but is: -1.0");
    assert_eq!(msg(Adafactor::default().with_beta2_decay(0.5)), "beta2_decay should be <= 0 but is: 0.5");
    assert_eq!(msg(Adafactor::default().with_eps(Some(-1.0), 1e-3)), "epsilon1 should be >= 0 but is: -1.0");
    assert_eq!(msg(Adafactor::default().with_eps(None, -1e-3)), "epsilon2 should be >= 0 but is: -0.001");
    assert_eq!(msg(Adafactor::default().with_d(0.5)), "Clipping threshold d should be >= 1 but is: 0.5");
    assert_eq!(msg(Adafactor::default().with_weight_decay(-0.1)), "weight_decay should be >= 0 but is: -0.1");
    assert!(matches!(
        CpuOptimizer::with_shape(Adafactor::default(), &[1.0f32; 6], &[2, 4]),
        Err(Error::LengthMismatch { expected: 8, actual: 6, .. })
    ));
    // A shape whose element count overflows is an error naming it, not a panic.
    match CpuOptimizer::with_shape(Adafactor::default(), &[1.0f32; 6], &[usize::MAX, 3]) {
        Err(Error::OverLimit(m)) => assert!(m.contains(&format!("{}", usize::MAX)), "{m}"),
        other => panic!("expected OverLimit, got {other:?}"),
    }
    assert!(matches!(CpuOptimizer::with_shape(Adafactor::default(), &[1.0f32; 6], &[0, 6]), Err(Error::Empty { .. })));
    let ctx = ctx();
    assert!(matches!(
        GpuOptimizer::with_shape(&ctx, Adafactor::default(), &[1.0f32; 6], &[0, 6]),
        Err(Error::Empty { .. })
    ));
    let mut gpu = GpuOptimizer::with_shape(&ctx, Adafactor::default(), &[1.0f32; 6], &[2, 3]).unwrap();
    assert!(matches!(gpu.step(&[1.0f32; 5]), Err(Error::LengthMismatch { .. })));
    assert_eq!(gpu.step_count(), 0);
}

/// Adafactor over a group of matrices and a vector, each with its own shape, beside an AdamW
/// group: gradient control, skip-on-inf, a schedule, reconfiguration, health, update tracking
/// and checkpoints, each checked against the CPU (one `CpuOptimizer` per tensor, the same
/// control) or against not stopping.
#[test]
fn in_param_groups_beside_adamw_with_everything_else() {
    use wgpu_optim::schedule::ExponentialLr;
    use wgpu_optim::{AdamW, GpuTensor, GradControl, ParamGroup, ParamGroups};
    let ctx = ctx();
    let shapes: Vec<Vec<usize>> = vec![vec![37, 29], vec![2, 5, 7], vec![50]];
    let lens: Vec<usize> = shapes.iter().map(|s| s.iter().product()).collect();
    let config = Adafactor::new(1e-2).with_weight_decay(0.01);
    let upload = |data: &[f32]| GpuTensor::from_slice(&ctx, data).unwrap();
    let start: Vec<Vec<f32>> = lens.iter().enumerate().map(|(t, &n)| params(n + t)[t..].to_vec()).collect();
    let ps: Vec<GpuTensor> = start.iter().map(|p| upload(p)).collect();
    let gs: Vec<GpuTensor> = lens.iter().map(|&n| GpuTensor::zeros(&ctx, n).unwrap()).collect();
    let (v, gv) = (upload(&params(64)), GpuTensor::zeros(&ctx, 64).unwrap());
    let build = |ps: &[GpuTensor]| {
        ParamGroups::new(
            &ctx,
            vec![
                ParamGroup::new(config.clone(), ps.iter().collect(), gs.iter().collect()).with_shapes(shapes.clone()),
                ParamGroup::new(AdamW::new(1e-2), vec![&v], vec![&gv]),
            ],
        )
        .unwrap()
    };
    let mut gpu = build(&ps);
    // A power-of-two loss scale unscales exactly: the CPU's control matches bit for bit.
    let control = GradControl { loss_scale: 1024.0, ..Default::default() };
    gpu.set_grad_control(Some(control)).unwrap();
    gpu.set_group_schedule(0, Some(ExponentialLr::new(0.9).unwrap().into())).unwrap();
    let mut cpu: Vec<CpuOptimizer> = start
        .iter()
        .zip(&shapes)
        .map(|(p, s)| {
            let mut c = CpuOptimizer::with_shape(config.clone(), p, s).unwrap();
            c.set_grad_control(Some(control)).unwrap();
            c.set_schedule(Some(ExponentialLr::new(0.9).unwrap().into())).unwrap();
            c
        })
        .collect();
    let grads_at = |k: usize| -> Vec<Vec<f32>> {
        lens.iter().enumerate().map(|(t, &n)| grads(n, k + t).iter().map(|x| x * 1024.0).collect()).collect()
    };
    let step = |gpu: &mut ParamGroups, cpu: Option<&mut Vec<CpuOptimizer>>, g: &[Vec<f32>]| {
        for (t, g) in gs.iter().zip(g) {
            t.write(&ctx, g).unwrap();
        }
        gv.write(&ctx, &grads(64, 1)).unwrap();
        gpu.run(1).unwrap();
        if let Some(cpu) = cpu {
            for (c, g) in cpu.iter_mut().zip(g) {
                c.step(g).unwrap();
            }
        }
    };
    let mut change = 0.0f32;
    for k in 1..=3 {
        let before: Vec<Vec<f32>> = cpu.iter().map(|c| c.params().to_vec()).collect();
        step(&mut gpu, Some(&mut cpu), &grads_at(k));
        for (b, c) in before.iter().zip(&cpu) {
            change = change.max(max_change(b, c.params().as_slice().unwrap()));
        }
    }
    // Between steps: another configuration of the same state, on both sides.
    let next = config.clone().with_d(1.5).with_beta2_decay(-0.6);
    gpu.reconfigure(0, next.clone()).unwrap();
    for c in &mut cpu {
        c.reconfigure(next.clone()).unwrap();
    }
    gpu.track_updates(true).unwrap();
    step(&mut gpu, Some(&mut cpu), &grads_at(4));
    let group = &gpu.groups()[0];
    let on_gpu = group.read_params().unwrap().to_vec();
    let mut at = 0;
    for (t, c) in cpu.iter().enumerate() {
        let want = c.params().as_slice().unwrap();
        assert_close(&format!("tensor {t} {:?}", shapes[t]), &on_gpu[at..at + want.len()], want, change, 4, BUDGET);
        at += want.len();
    }
    // The group's state is each tensor's, end to end, in tensor order.
    for name in ["row_var", "col_var", "variance"] {
        let want: Vec<f32> = cpu.iter().filter_map(|c| c.state_tensor(name)).flat_map(|t| t.to_vec()).collect();
        let got = group.read_state(name).unwrap().to_vec();
        assert_close(&format!("group {name}"), &got, &want, 0.0, 4, 24.0);
    }
    // Health: parameters and each state over the group's tensors, with the last update.
    let health = gpu.health().unwrap();
    let ours: Vec<(&str, usize)> = health.iter().filter(|h| h.group == 0).map(|h| (h.name, h.len)).collect();
    assert_eq!(ours, [("params", lens.iter().sum()), ("variance", 50), ("row_var", 37 + 10), ("col_var", 29 + 14)]);
    assert!(health.iter().all(|h| h.nan == 0 && h.inf == 0));
    assert!(health[0].max_update.is_some_and(|u| u > 0.0), "{:?}", health[0]);

    // A non-finite gradient skips the step of every group: nothing moves, bit for bit.
    let snapshot = |gpu: &ParamGroups| -> Vec<Vec<u32>> {
        let g = &gpu.groups()[0];
        let mut all = vec![g.read_params().unwrap().to_vec()];
        all.extend(g.state().map(|(_, t)| t.read(&ctx).unwrap()));
        all.push(gpu.groups()[1].read_params().unwrap().to_vec());
        all.iter().map(|v| v.iter().map(|x| x.to_bits()).collect()).collect()
    };
    let before = snapshot(&gpu);
    let mut bad = grads_at(5);
    bad[1][3] = f32::INFINITY;
    step(&mut gpu, None, &bad);
    assert_eq!(snapshot(&gpu), before);
    assert_eq!(gpu.sync().unwrap(), 4);

    // A checkpoint of the groups resumes bit for bit (the Adafactor group compared; the
    // AdamW group's parameters are shared by both).
    let path = std::env::temp_dir().join(format!("wgpu-optim-adafactor-groups-{}.safetensors", std::process::id()));
    gpu.save(&path).unwrap();
    let now: Vec<Vec<f32>> = {
        let p = gpu.groups()[0].read_params().unwrap().to_vec();
        let mut at = 0;
        lens.iter().map(|&n| (p[at..at + n].to_vec(), at += n).0).collect()
    };
    let resumed_ps: Vec<GpuTensor> = now.iter().map(|p| upload(p)).collect();
    let mut resumed = build(&resumed_ps);
    resumed.set_grad_control(Some(control)).unwrap();
    resumed.set_group_schedule(0, Some(ExponentialLr::new(0.9).unwrap().into())).unwrap();
    resumed.reconfigure(0, next.clone()).unwrap();
    resumed.load(&path).unwrap();
    for k in 6..=7 {
        step(&mut gpu, None, &grads_at(k));
        step(&mut resumed, None, &grads_at(k));
    }
    assert_eq!(snapshot(&resumed)[..4], snapshot(&gpu)[..4]);
    std::fs::remove_file(&path).unwrap();
}
