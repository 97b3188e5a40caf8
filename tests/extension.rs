//! The `Optimizer` trait is an extension point: an optimizer defined outside the crate (here
//! Signum, sign-SGD with momentum, Bernstein et al. 2018) runs on the GPU and the CPU, in
//! parameter groups, like the crate's own.

mod common;

use common::*;
use wgpu_optim::optim::{Kernel, Optimizer, ScalarBlock, StateSlices, StateSlot, pack};
use wgpu_optim::{CpuOptimizer, GpuOptimizer, Result, step};

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
@group(1) @binding(0) var<storage, read_write> p: array<V>;
@group(1) @binding(1) var<storage, read_write> g: array<V>;
@group(1) @binding(2) var<storage, read_write> momentum_buffer: array<V>;

fn update(i: u32, s: Scalars) {
    let m = fma(grad(i), V(s.one_minus_beta), momentum_buffer[i] * s.beta);
    momentum_buffer[i] = m;
    p[i] = fma(sign(m), V(s.neg_lr), p[i]);
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
fn stages_declared_for_later_are_refused_on_both_sides() {
    use wgpu_optim::Error;
    use wgpu_optim::step::{Scope, Stage};
    static MATMUL: Kernel = Kernel { stages: &[Stage::MatMul, Stage::Elementwise], ..KERNEL_FIELDS };
    static BLOCKS: Kernel = Kernel { stages: &[Stage::Reduce(Scope::Block(256)), Stage::Elementwise], ..KERNEL_FIELDS };
    static TWO_SUMS: Kernel = Kernel {
        stages: &[Stage::Reduce(Scope::Tensor), Stage::Reduce(Scope::Group), Stage::Elementwise],
        ..KERNEL_FIELDS
    };
    let ctx = ctx();
    for (kernel, says) in [(&MATMUL, "matrix-product"), (&BLOCKS, "blocks of 256"), (&TWO_SUMS, "2 reduction")] {
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
    state: &[StateSlot { role: "m", torch_name: "momentum_buffer" }],
    scalar_size: size_of::<Scalars>(),
    step_error_budget: 4.0,
    stages: step::ELEMENTWISE,
};
