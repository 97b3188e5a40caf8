//! Adafactor: its reductions alone, GPU vs CPU over awkward shapes and layouts, its state
//! size and its errors.

mod common;

use common::*;
use wgpu_optim::{Adafactor, CpuOptimizer, Error, GpuAdafactor, GpuContext, Threads};

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
    let mut gpu = GpuAdafactor::new(ctx, config.clone(), &params(n), shape).unwrap();
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
        let mut gpu = GpuAdafactor::new(&ctx, config.clone(), &params(n), &shape).unwrap();
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
    let gpu = GpuAdafactor::new(&ctx, config.clone(), &params(6 * 63), &[6, 7, 9]).unwrap();
    assert_eq!(gpu.params().segments().len(), 2);
    // A matrix larger than a sub-range is refused with a way out.
    match GpuAdafactor::new(&ctx, config, &params(300), &[10, 30]) {
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
    let gpu = GpuAdafactor::new(&ctx, Adafactor::default(), &params(b * m * n), &[b, m, n]).unwrap();
    assert_eq!(gpu.state_len(), b * (m + n));
    assert_eq!(gpu.read_state("row_var").unwrap().len(), b * m);
    assert_eq!(gpu.read_state("col_var").unwrap().len(), b * n);
    assert!(gpu.read_state("variance").is_err());
    let cpu = CpuOptimizer::with_shape(Adafactor::default(), &params(b * m * n), &[b, m, n]).unwrap();
    assert_eq!(cpu.state_tensor("row_var").unwrap().len() + cpu.state_tensor("col_var").unwrap().len(), b * (m + n));
    // Vectors keep one value per element.
    let v = GpuAdafactor::new(&ctx, Adafactor::default(), &params(100), &[100]).unwrap();
    assert_eq!(v.state_len(), 100);
}

#[test]
fn k_steps_per_submit_equal_k_calls_and_parallel_equals_sequential() {
    let ctx = ctx();
    let shape = [2, 30, 20];
    let n = shape_len(&shape);
    let g = grads(n, 1);
    let mut one = GpuAdafactor::new(&ctx, Adafactor::new(1e-2), &params(n), &shape).unwrap();
    let mut many = GpuAdafactor::new(&ctx, Adafactor::new(1e-2), &params(n), &shape).unwrap();
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
    assert!(matches!(GpuAdafactor::new(&ctx, Adafactor::default(), &[1.0f32; 6], &[0, 6]), Err(Error::Empty { .. })));
    let mut gpu = GpuAdafactor::new(&ctx, Adafactor::default(), &[1.0f32; 6], &[2, 3]).unwrap();
    assert!(matches!(gpu.step(&[1.0f32; 5]), Err(Error::LengthMismatch { .. })));
    assert_eq!(gpu.step_count(), 0);
}
