//! SparseAdam (torch.optim.SparseAdam) on the CPU against torch's values, and on the GPU
//! against the CPU.

mod common;

use common::*;
use wgpu_optim::{CpuRows, Error, GpuRows, RowRule, SparseAdam, SparseSgd};

const ROWS: usize = 10;
const DIM: usize = 4;
/// The rows of each step's gradient (`scripts/sparse_adam_reference.py`).
const STEPS: [&[u32]; 5] = [&[1, 3, 1, 7], &[0, 9], &[3, 3, 3], &[], &[2, 1, 8, 1, 5]];

type Case = (&'static str, &'static [f64], &'static [f64], &'static [f64]);

/// The table, exp_avg and exp_avg_sq after the five steps.
#[rustfmt::skip]
const TORCH: &[Case] = &[
    // torch 2.15.0+cu132
    ("defaults lr 0.01", &[-1.9351757764816284, 1.8218945264816284, 1.6558789014816284, 1.4749804735183716, 1.3016963005065918, 1.1342512369155884, 1.0011054277420044, 0.8032763600349426, 0.6577986478805542, 0.4808732271194458, 0.3148576021194458, 0.159751757979393, -0.0020185934845358133, -0.19501517713069916, -0.3622235059738159, -0.5009346604347229, -0.67578125, -0.841796875, -1.0078125, -1.173828125, -1.3452986478805542, -1.5004044771194458, -1.6664201021194458, -1.8433455228805542, 1.904296875, 1.73828125, 1.572265625, 1.40625, 1.2302343845367432, 1.0842187404632568, 0.8982031345367432, 0.7321875095367432, 0.5707169771194458, 0.4156111478805542, 0.238685742020607, 0.0835798904299736, -0.08044926077127457, -0.24646489322185516, -0.42736324667930603, -0.5784961581230164],
        &[0.04218750074505806, -0.08710937947034836, -0.02099609375, 0.04511718824505806, 0.07176757603883743, 0.1471288949251175, -0.16833007335662842, 0.08290039002895355, -0.04189453274011612, 0.02421875111758709, 0.09033203125, -0.03896484524011612, 0.003662109375, 0.06609375029802322, 0.12852539122104645, 0.015087895095348358, 0.0, 0.0, 0.0, 0.0, 0.03886718675494194, -0.09042968600988388, -0.02431640587747097, 0.04179687425494194, 0.0, 0.0, 0.0, 0.0, 0.08193359524011612, -0.04736328125, 0.01875000074505806, 0.08486328274011612, 0.09619140625, -0.03310547024011612, 0.03300781175494194, -0.09628906100988388, -0.08417969197034836, -0.01806640625, 0.04804687574505806, -0.08125000447034836],
        &[0.00017797852342482656, 0.0007588043808937073, 4.408359745866619e-05, 0.0002035560755757615, 0.0006908777868375182, 0.001708892290480435, 0.0018612650455906987, 0.0007914849556982517, 0.00017551518976688385, 5.8654786698753014e-05, 0.0008159876451827586, 0.00015182590868789703, 0.0006087488727644086, 0.000336283294018358, 0.000938853423576802, 0.0006797342794016004, 0.0, 0.0, 0.0, 0.0, 0.00015106583305168897, 0.0008177528507076204, 5.9128764405613765e-05, 0.00017469788144808263, 0.0, 0.0, 0.0, 0.0, 0.000671311398036778, 0.00022432804689742625, 3.515625212457962e-05, 0.0007201776606962085, 0.0009252786985598505, 0.0001095972111215815, 0.00010895157174672931, 0.0009271583985537291, 0.0007086219848133624, 3.263950566179119e-05, 0.0002308502298546955, 0.0006601563072763383]),
    ("betas maximize eps", &[-1.8894562721252441, 1.775712490081787, 1.61103355884552, 1.5207575559616089, 1.3907628059387207, 1.2342853546142578, 0.8961912989616394, 0.8950109481811523, 0.6201833486557007, 0.5179504752159119, 0.3528800308704376, 0.12219274044036865, -0.056688226759433746, -0.09331890195608139, -0.25065717101097107, -0.5501895546913147, -0.67578125, -0.841796875, -1.0078125, -1.173828125, -1.307741641998291, -1.5384272336959839, -1.7035024166107178, -1.805732011795044, 1.904296875, 1.73828125, 1.572265625, 1.40625, 1.2896314859390259, 1.0252525806427002, 0.955671489238739, 0.7916051745414734, 0.6087611317634583, 0.3781936764717102, 0.27610042691230774, 0.04553540050983429, -0.126615971326828, -0.2910364270210266, -0.38153544068336487, -0.6246464848518372],
        &[-0.08437500149011612, 0.17421875894069672, 0.0419921875, -0.09023437649011612, -0.12691405415534973, -0.29027342796325684, 0.3280078172683716, -0.1480078101158142, 0.08378906548023224, -0.04843750223517418, -0.1806640625, 0.07792969048023224, -0.0185546875, -0.13019530475139618, -0.24183595180511475, -0.04082031548023224, 0.0, 0.0, 0.0, 0.0, -0.07773437350988388, 0.18085937201976776, 0.04863281175494194, -0.08359374850988388, 0.0, 0.0, 0.0, 0.0, -0.16386719048023224, 0.0947265625, -0.03750000149011612, -0.16972656548023224, -0.1923828125, 0.06621094048023224, -0.06601562350988388, 0.19257812201976776, 0.16835938394069672, 0.0361328125, -0.09609375149011612, 0.16250000894069672],
        &[0.0017797851469367743, 0.007588042877614498, 0.00044083595275878906, 0.0020355605520308018, 0.006846618372946978, 0.017085351049900055, 0.018595805391669273, 0.007843616418540478, 0.0017551516648381948, 0.0005865478306077421, 0.008159875869750977, 0.0015182590577751398, 0.006059110164642334, 0.003361940151080489, 0.009336448274552822, 0.0067718480713665485, 0.0, 0.0, 0.0, 0.0, 0.0015106581849977374, 0.008177528157830238, 0.0005912876222282648, 0.0017469787271693349, 0.0, 0.0, 0.0, 0.0, 0.006713113747537136, 0.0022432804107666016, 0.00035156248486600816, 0.007201776374131441, 0.009252786636352539, 0.0010959720239043236, 0.0010895156301558018, 0.009271583519876003, 0.007086219731718302, 0.00032639503479003906, 0.002308502094820142, 0.006601562257856131]),
    ("sgd", &[-1.9699218273162842, 1.9015624523162842, 1.66943359375, 1.4373047351837158, 1.236328125, 1.0012694597244263, 1.1570312976837158, 0.7265625, 0.6942383050918579, 0.46210938692092896, 0.22998046875, 0.19326171278953552, -0.009765625, -0.24482421576976776, -0.4798828065395355, -0.51953125, -0.67578125, -0.841796875, -1.0078125, -1.173828125, -1.3787109851837158, -1.415429711341858, -1.647558569908142, -1.8796875476837158, 1.904296875, 1.73828125, 1.572265625, 1.40625, 1.158300757408142, 1.12158203125, 0.889453113079071, 0.6573241949081421, 0.47998046875, 0.4432617127895355, 0.21113280951976776, 0.17441406846046448, -0.003710936289280653, -0.23583984375, -0.46796876192092896, -0.504687488079071],
        &[],
        &[]),
    ("sgd maximize", &[-1.906640648841858, 1.770898461341858, 1.637939453125, 1.504980444908142, 1.3564453125, 1.224951148033142, 0.8980468511581421, 0.8642578125, 0.631396472454071, 0.4984374940395355, 0.365478515625, 0.13481445610523224, -0.0126953125, -0.14418944716453552, -0.27568358182907104, -0.5048828125, -0.67578125, -0.841796875, -1.0078125, -1.173828125, -1.320410132408142, -1.5510742664337158, -1.6840331554412842, -1.816992163658142, 1.904296875, 1.73828125, 1.572265625, 1.40625, 1.2812011241912842, 1.050537109375, 0.9175781011581421, 0.784619152545929, 0.624267578125, 0.39360350370407104, 0.2606445252895355, 0.02998046763241291, -0.12998047471046448, -0.262939453125, -0.3958984315395355, -0.6265624761581421],
        &[],
        &[]),
];

fn case(label: &str) -> RowRule {
    match label {
        "defaults lr 0.01" => SparseAdam::new(0.01).into(),
        "betas maximize eps" => SparseAdam::new(0.05).with_betas(0.8, 0.99).with_maximize(true).with_eps(1e-3).into(),
        "sgd" => SparseSgd::new(0.1).into(),
        "sgd maximize" => SparseSgd::new(0.05).with_maximize(true).into(),
        other => panic!("no case {other}"),
    }
}

/// Step `k`'s values: grad(j, k) for its j-th value.
fn values(k: usize, rows: &[u32]) -> Vec<f32> {
    grads(rows.len() * DIM, k)
}

#[test]
fn the_cpu_reference_matches_torch() {
    // torch's ops in torch's order on the same f32 values, duplicates summing exactly
    // (multiples of 1/1024): equal, bit for bit.
    for (label, p, m, v) in TORCH {
        let mut cpu = CpuRows::new(case(label), &params(ROWS * DIM), ROWS, DIM).unwrap();
        for (k, rows) in STEPS.iter().enumerate() {
            cpu.step(rows, &values(k + 1, rows)).unwrap();
        }
        assert_eq!(cpu.step_count(), 5, "an empty gradient counts a step");
        let moments = |name| cpu.state_tensor(name).unwrap_or_default();
        for (what, got, want) in [
            ("params", cpu.params(), *p),
            ("exp_avg", moments("exp_avg"), *m),
            ("exp_avg_sq", moments("exp_avg_sq"), *v),
        ] {
            let got: Vec<f64> = got.iter().map(|&x| f64::from(x)).collect();
            assert_eq!(got, want, "{label}: {what}");
        }
    }
}

#[test]
fn the_gpu_steps_rows_as_the_cpu_and_leaves_the_others_alone() {
    let ctx = ctx();
    for (label, ..) in TORCH {
        let mut gpu = GpuRows::new(&ctx, case(label), &params(ROWS * DIM), ROWS, DIM).unwrap();
        let mut cpu = CpuRows::new(case(label), &params(ROWS * DIM), ROWS, DIM).unwrap();
        for (k, rows) in STEPS.iter().enumerate() {
            gpu.step(rows, &values(k + 1, rows)).unwrap();
            cpu.step(rows, &values(k + 1, rows)).unwrap();
        }
        // Per element a few roundings, the same on both sides (WGSL's sqrt and division within
        // 4.5 and 2.5 ulp): the Adam budget over five steps.
        let budget = 12.0;
        assert_close(label, &gpu.read_params().unwrap(), cpu.params(), 0.1, 5, budget);
        for name in ["exp_avg", "exp_avg_sq"] {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            match cpu.state_tensor(name) {
                Some(reference) => assert_eq!(bits(&gpu.read_state(name).unwrap()), bits(reference), "{label}: {name}"),
                None => assert!(gpu.read_state(name).is_err(), "{label}: SGD keeps no {name}"),
            }
        }
        // Row 4 and row 6 were never touched: their parameters are the initial ones.
        let p = gpu.read_params().unwrap();
        for r in [4, 6] {
            assert_eq!(&p[r * DIM..(r + 1) * DIM], &params(ROWS * DIM)[r * DIM..(r + 1) * DIM], "{label}: row {r}");
        }
    }
    // A larger table with many duplicates: rows beyond one workgroup's reach, dim beyond 256.
    let (rows, dim) = (300usize, 300usize);
    let indices: Vec<u32> = (0..700u32).map(|i| (i * 37) % 211).collect();
    let vals = grads(indices.len() * dim, 3);
    let mut gpu = GpuRows::new(&ctx, SparseAdam::new(0.01), &params(rows * dim), rows, dim).unwrap();
    let mut cpu = CpuRows::new(SparseAdam::new(0.01), &params(rows * dim), rows, dim).unwrap();
    gpu.step(&indices, &vals).unwrap();
    cpu.step(&indices, &vals).unwrap();
    assert_close("300 × 300", &gpu.read_params().unwrap(), cpu.params(), 0.1, 1, 12.0);
}

#[test]
fn what_sparse_adam_refuses() {
    let ctx = ctx();
    let refused = |r: Result<CpuRows, Error>, says: &str| match r {
        Err(Error::InvalidHyperParameter { message, .. }) => assert!(message.contains(says), "{message}"),
        other => panic!("{says}: {other:?}"),
    };
    refused(CpuRows::new(SparseAdam::new(0.0), &params(8), 2, 4), "Invalid learning rate: 0.0");
    refused(CpuRows::new(SparseAdam::new(0.1).with_eps(0.0), &params(8), 2, 4), "Invalid epsilon value: 0.0");
    refused(CpuRows::new(SparseAdam::new(0.1).with_betas(1.0, 0.9), &params(8), 2, 4), "beta parameter at index 0");
    assert!(matches!(CpuRows::new(SparseAdam::new(0.1), &params(8), 3, 4), Err(Error::LengthMismatch { .. })));
    let mut gpu = GpuRows::new(&ctx, SparseAdam::new(0.1), &params(8), 2, 4).unwrap();
    let before = gpu.read_params().unwrap();
    match gpu.step(&[2], &[0.0; 4]) {
        Err(Error::OverLimit(message)) => assert!(message.contains("indices[0] = 2"), "{message}"),
        other => panic!("a row past the table: {other:?}"),
    }
    assert!(matches!(gpu.step(&[1], &[0.0; 3]), Err(Error::LengthMismatch { .. })), "values of another length");
    assert_eq!(gpu.read_params().unwrap(), before, "a refused step changes nothing");
    assert_eq!(gpu.step_count(), 0);
}

#[test]
fn steps_recorded_into_one_encoder_equal_as_many_step_calls() {
    // Each recorded step reads its own scalars (bias corrections differ step to step).
    let ctx = ctx();
    let rows: &[u32] = &[1, 3, 1, 7];
    let vals = values(1, rows);
    let mut calls = GpuRows::new(&ctx, SparseAdam::new(0.01), &params(ROWS * DIM), ROWS, DIM).unwrap();
    for _ in 0..3 {
        calls.step(rows, &vals).unwrap();
    }
    let mut recorded = GpuRows::new(&ctx, SparseAdam::new(0.01), &params(ROWS * DIM), ROWS, DIM).unwrap();
    let indices = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 16,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    ctx.queue().write_buffer(&indices, 0, bytemuck::cast_slice(rows));
    let v = wgpu_optim::GpuTensor::from_slice(&ctx, &vals).unwrap();
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    for _ in 0..3 {
        recorded.record(&mut encoder, &indices, &v, rows.len()).unwrap();
    }
    ctx.queue().submit([encoder.finish()]);
    let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(recorded.read_params().unwrap()), bits(calls.read_params().unwrap()));
    assert_eq!(recorded.step_count(), 3);
}
