//! The `Optimizer` trait is an extension point: an optimizer defined outside the crate (here
//! Signum, sign-SGD with momentum, Bernstein et al. 2018) runs on the GPU and the CPU, in
//! parameter groups, like the crate's own.

mod common;

use common::*;
use wgpu_optim::optim::{Kernel, Optimizer, ScalarBlock, StateSlices, StateSlot, pack};
use wgpu_optim::{CpuOptimizer, GpuOptimizer, GpuTensor, ParamGroup, ParamGroups, Result, step};

/// `m = beta * m + (1 - beta) * g;  p = p - lr * sign(m)`.
#[derive(Clone, Debug)]
struct Signum {
    lr: f64,
    beta: f64,
}

const SHADER: &str = r#"
struct Scalars {
    beta: f32,
    one_minus_beta: f32,
    neg_lr: f32,
}

// The engine declares p, g and the state (Kernel::state) with their accessors.
fn update(i: u32, s: Scalars) {
    let m = fma(grad(i), V(s.one_minus_beta), load_momentum_buffer(i) * s.beta);
    store_momentum_buffer(i, m);
    store_p(i, fma(sign(m), V(s.neg_lr), load_p(i)));
}
"#;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Scalars {
    beta: f32,
    one_minus_beta: f32,
    neg_lr: f32,
}

// mul + fma (2), the update's fma (1); sign is exact: a budget of 4.
static KERNEL: Kernel = KERNEL_FIELDS;

impl Signum {
    fn host(&self) -> Scalars {
        Scalars { beta: self.beta as f32, one_minus_beta: (1.0 - self.beta) as f32, neg_lr: (-self.lr) as f32 }
    }
}

impl Optimizer for Signum {
    fn name(&self) -> &'static str {
        "Signum"
    }
    fn config(&self) -> serde_json::Value {
        serde_json::json!({ "lr": self.lr, "beta": self.beta })
    }
    fn reference(&self) -> &'static str {
        "Bernstein et al. (2018), signSGD with momentum"
    }
    fn validate(&self) -> Result<()> {
        Ok(())
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn kernel(&self) -> &'static Kernel {
        &KERNEL
    }
    fn constants(&self) -> Vec<(&'static str, f64)> {
        Vec::new()
    }
    fn scalars(&self, _step: u64) -> ScalarBlock {
        pack(&self.host())
    }
    fn update_cpu(&self, _step: u64, p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>) {
        let s = self.host();
        let [m] = state else { return };
        for ((p, &g), m) in p.iter_mut().zip(g).zip(m.iter_mut()) {
            *m = g.mul_add(s.one_minus_beta, *m * s.beta);
            let sign: f32 = if *m > 0.0 {
                1.0
            } else if *m < 0.0 {
                -1.0
            } else {
                0.0
            };
            *p = sign.mul_add(s.neg_lr, *p);
        }
    }
    fn clone_box(&self) -> Box<dyn Optimizer> {
        Box::new(self.clone())
    }
}

#[test]
fn an_optimizer_from_outside_the_crate_runs_on_both_sides() {
    let ctx = ctx();
    let n = 4099;
    let o = Signum { lr: 1e-2, beta: 0.9 };
    let mut gpu = GpuOptimizer::new(&ctx, o.clone(), &params(n)).unwrap();
    let mut cpu = CpuOptimizer::new(o, &params(n)).unwrap();
    for k in 1..=5 {
        gpu.step(&grads(n, k)).unwrap();
        cpu.step(&grads(n, k)).unwrap();
    }
    let on_gpu = gpu.read_params().unwrap();
    assert_close("signum", on_gpu.as_slice().unwrap(), cpu.params().as_slice().unwrap(), 1e-2, 5, 4.0);
    assert_eq!(gpu.read_state("momentum_buffer").unwrap().len(), n);
    // It moved every parameter by lr per step where the momentum had a sign.
    let moved = on_gpu.iter().zip(params(n)).filter(|(a, b)| (*a - b).abs() > 1e-3).count();
    assert!(moved > n * 9 / 10, "only {moved} of {n} parameters moved");
}

/// Signum's update under a kernel that declares other stages.
#[derive(Clone, Debug)]
struct Declaring {
    signum: Signum,
    kernel: &'static Kernel,
}

impl Optimizer for Declaring {
    fn name(&self) -> &'static str {
        "Declaring"
    }
    fn config(&self) -> serde_json::Value {
        self.signum.config()
    }
    fn reference(&self) -> &'static str {
        self.signum.reference()
    }
    fn validate(&self) -> Result<()> {
        Ok(())
    }
    fn lr(&self) -> f64 {
        self.signum.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.signum.lr = lr;
    }
    fn kernel(&self) -> &'static Kernel {
        self.kernel
    }
    fn constants(&self) -> Vec<(&'static str, f64)> {
        Vec::new()
    }
    fn scalars(&self, step: u64) -> ScalarBlock {
        self.signum.scalars(step)
    }
    fn update_cpu(&self, step: u64, p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>) {
        self.signum.update_cpu(step, p, g, state)
    }
    fn clone_box(&self) -> Box<dyn Optimizer> {
        Box::new(self.clone())
    }
}

#[test]
fn stages_the_engine_cannot_run_are_refused_on_both_sides() {
    use wgpu_optim::Error;
    use wgpu_optim::step::{Scope, Stage};
    static MATMUL: Kernel = Kernel { stages: &[Stage::MatMul, Stage::Elementwise], ..KERNEL_FIELDS };
    static ODD_BLOCKS: Kernel =
        Kernel { stages: &[Stage::Reduce(Scope::Block(6)), Stage::Elementwise], ..KERNEL_FIELDS };
    static TENSOR_MAX: Kernel =
        Kernel { stages: &[Stage::ReduceMax(Scope::Tensor), Stage::Elementwise], ..KERNEL_FIELDS };
    static TWO_SUMS: Kernel = Kernel {
        stages: &[Stage::Reduce(Scope::Tensor), Stage::Reduce(Scope::Group), Stage::Elementwise],
        ..KERNEL_FIELDS
    };
    let ctx = ctx();
    // A matrix product runs on the CPU through the optimizer's own `shaped_cpu` (Muon's);
    // the GPU engine does not record one yet. This one implements no `shaped_cpu`: its CPU
    // step says so and changes nothing.
    let o = Declaring { signum: Signum { lr: 1e-2, beta: 0.9 }, kernel: &MATMUL };
    match GpuOptimizer::new(&ctx, o.clone(), &params(64)) {
        Err(Error::Unsupported(m)) => assert!(m.contains("matrix-product") && m.contains("Declaring"), "{m}"),
        Err(other) => panic!("expected Unsupported for a matrix product on the GPU, got {other}"),
        Ok(_) => panic!("expected Unsupported for a matrix product on the GPU, got an optimizer"),
    }
    let mut cpu = CpuOptimizer::with_shape(o, &params(64), &[8, 8]).unwrap();
    match cpu.step(&grads(64, 1)) {
        Err(Error::Unsupported(m)) => assert!(m.contains("Declaring"), "{m}"),
        other => panic!("expected Unsupported from a CPU step without shaped_cpu, got {other:?}"),
    }
    assert_eq!(cpu.params().as_slice().unwrap(), &params(64)[..], "a refused step changes nothing");
    let refused = [(&ODD_BLOCKS, "blocks of 6"), (&TENSOR_MAX, "maxima over Tensor"), (&TWO_SUMS, "2 reduction")];
    for (kernel, says) in refused {
        let o = Declaring { signum: Signum { lr: 1e-2, beta: 0.9 }, kernel };
        for result in
            [GpuOptimizer::new(&ctx, o.clone(), &params(64)).map(|_| ()), CpuOptimizer::new(o, &params(64)).map(|_| ())]
        {
            match result {
                Err(Error::Unsupported(m)) => assert!(m.contains(says) && m.contains("Declaring"), "{m}"),
                other => panic!("expected Unsupported for {says}, got {other:?}"),
            }
        }
    }
}

/// Signum's kernel (and that of kernels that change only their stages).
const KERNEL_FIELDS: Kernel = Kernel {
    family: "signum (tests/extension.rs)",
    source: SHADER,
    state: &[StateSlot { role: "m", torch_name: "momentum_buffer", signed: true }],
    scalar_size: size_of::<Scalars>(),
    step_error_budget: 4.0,
    stages: step::ELEMENTWISE,
};

/// Sign-preserving SGD scaled per block: `p = p - lr * g / (r + eps)`, where `r` is the
/// block's Σ|g| (a summed per-block reduction) or its max |g| (absmax, by maximum).
#[derive(Clone, Debug)]
struct BlockScaled {
    lr: f64,
    kernel: &'static Kernel,
    max: bool,
}

const BLOCK_SHADER: &str = r#"
struct Scalars {
    neg_lr: f32,
    eps: f32,
}

fn reduce_update(i: u32, s: Scalars) -> vec4<f32> {
    return vec4<f32>(hsum(abs(grad(i))), 0.0, 0.0, 0.0);
}

fn update(i: u32, s: Scalars) {
    let scale = block_reduced(i).x + s.eps;
    store_p(i, fma(grad(i) / scale, V(s.neg_lr), load_p(i)));
}
"#;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct BlockScalars {
    neg_lr: f32,
    eps: f32,
}

/// A block kernel: `stages` with BLOCK_SHADER. The budget: the division (2.5 ulp in WGSL,
/// 0.5 on the CPU), + eps and the fma (1 each), and for a sum the f32 tree against the CPU's
/// f64 sum of up to 256 terms (log2(256) = 8 ulp of the scale, reaching the update once).
const fn block_kernel(family: &'static str, stages: &'static [step::Stage]) -> Kernel {
    Kernel {
        family,
        source: BLOCK_SHADER,
        state: &[],
        scalar_size: size_of::<BlockScalars>(),
        step_error_budget: 14.0,
        stages,
    }
}

impl Optimizer for BlockScaled {
    fn name(&self) -> &'static str {
        "BlockScaled"
    }
    fn config(&self) -> serde_json::Value {
        serde_json::json!({ "lr": self.lr, "max": self.max })
    }
    fn reference(&self) -> &'static str {
        "tests/extension.rs"
    }
    fn validate(&self) -> Result<()> {
        Ok(())
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn kernel(&self) -> &'static Kernel {
        self.kernel
    }
    fn constants(&self) -> Vec<(&'static str, f64)> {
        Vec::new()
    }
    fn scalars(&self, _step: u64) -> ScalarBlock {
        pack(&BlockScalars { neg_lr: (-self.lr) as f32, eps: 1e-3 })
    }
    fn update_cpu(&self, step: u64, p: &mut [f32], g: &[f32], state: StateSlices<'_, '_>) {
        self.apply_cpu(step, p, g, state, [0.0; 4])
    }
    fn reduce_cpu(
        &self,
        _stage: usize,
        _step: u64,
        _p: &mut [f32],
        g: &[f32],
        _state: StateSlices<'_, '_>,
    ) -> [f64; 4] {
        let r = if self.max {
            g.iter().map(|x| f64::from(x.abs())).fold(0.0, f64::max)
        } else {
            g.iter().map(|x| f64::from(x.abs())).sum()
        };
        [r, 0.0, 0.0, 0.0]
    }
    fn apply_cpu(&self, _step: u64, p: &mut [f32], g: &[f32], _state: StateSlices<'_, '_>, reduced: [f32; 4]) {
        let scale = reduced[0] + 1e-3;
        for (p, &g) in p.iter_mut().zip(g) {
            *p = (g / scale).mul_add((-self.lr) as f32, *p);
        }
    }
    fn clone_box(&self) -> Box<dyn Optimizer> {
        Box::new(self.clone())
    }
}

#[test]
fn per_block_sums_and_maxima_match_the_cpu_over_awkward_layouts() {
    use step::{Scope, Stage};
    static SUMS: Kernel =
        block_kernel("block sums (tests/extension.rs)", &[Stage::Reduce(Scope::Block(64)), Stage::Elementwise]);
    static MAXIMA: Kernel =
        block_kernel("block maxima (tests/extension.rs)", &[Stage::ReduceMax(Scope::Block(256)), Stage::Elementwise]);
    // 1 KiB sub-ranges (256 elements): whole blocks of 64 and of 256 in each.
    let small = ctx_with(|t| {
        let align = u64::from(ctx().limits().min_storage_buffer_offset_alignment).max(16);
        t.segment_bytes = 1024u64.next_multiple_of(align);
        t.buffer_bytes = 4 * t.segment_bytes;
    });
    for (kernel, max) in [(&SUMS, false), (&MAXIMA, true)] {
        let o = BlockScaled { lr: 1e-2, kernel, max };
        for (ctx, n) in [(ctx(), 1), (ctx(), 3), (ctx(), 1023), (ctx(), 4097), (small.clone(), 1500)] {
            let mut gpu = GpuOptimizer::new(&ctx, o.clone(), &params(n)).unwrap();
            let mut seq = CpuOptimizer::new(o.clone(), &params(n)).unwrap();
            let mut par = CpuOptimizer::new(o.clone(), &params(n)).unwrap().with_threads(wgpu_optim::Threads::Parallel);
            gpu.grads().write(&ctx, &grads(n, 1)).unwrap();
            gpu.run(3).unwrap();
            for _ in 0..3 {
                seq.step(&grads(n, 1)).unwrap();
                par.step(&grads(n, 1)).unwrap();
            }
            assert_eq!(seq.params(), par.params(), "{} n={n}", kernel.family);
            let (got, want) = (gpu.read_params().unwrap(), seq.params().clone());
            let label = format!("{} n={n}", kernel.family);
            assert_close(&label, got.as_slice().unwrap(), want.as_slice().unwrap(), 1e-2, 3, 14.0);
            // Each block moved by its own scale: a block of large gradients moves no more per
            // element than lr (its |g| / r ≤ 1), whatever the other blocks hold.
            let moved = got.iter().zip(params(n)).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(moved <= 3.0 * 1e-2 * 1.001, "{label}: moved {moved}");
        }
        // In a group, blocks start again at each tensor: two tensors of 300 and 77 elements,
        // each against its own CPU optimizer.
        let ctx = ctx();
        let (a, b) =
            (GpuTensor::from_slice(&ctx, &params(300)).unwrap(), GpuTensor::from_slice(&ctx, &params(77)).unwrap());
        let (ga, gb) =
            (GpuTensor::from_slice(&ctx, &grads(300, 2)).unwrap(), GpuTensor::from_slice(&ctx, &grads(77, 3)).unwrap());
        let mut groups =
            ParamGroups::new(&ctx, vec![ParamGroup::new(o.clone(), vec![&a, &b], vec![&ga, &gb])]).unwrap();
        groups.run(2).unwrap();
        for (t, n, k) in [(&a, 300, 2), (&b, 77, 3)] {
            let mut cpu = CpuOptimizer::new(o.clone(), &params(n)).unwrap();
            cpu.step(&grads(n, k)).unwrap();
            cpu.step(&grads(n, k)).unwrap();
            let label = format!("{} group tensor of {n}", kernel.family);
            assert_close(&label, &t.read(&ctx).unwrap(), cpu.params().as_slice().unwrap(), 1e-2, 2, 14.0);
        }
    }
}
