//! The benchmark's guard: a GPU result that disagrees with the CPU is refused, not timed.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::*;
use wgpu_optim::{AdamW, Optimizer};
use wgpu_optim_cli::Error;
use wgpu_optim_cli::bench::{Storage, TensorSet, Workload};

#[test]
fn the_benchmark_refuses_to_time_a_wrong_result() {
    let ctx = ctx();
    let w = Workload::new(AdamW::default().into(), TensorSet::model("gpt2-mini").unwrap());
    for storage in [Storage::Arena, Storage::Buffers] {
        let mut good = w.gpu(&ctx, storage).unwrap();
        let worst = w.check(&ctx, &mut good, 2).unwrap();
        assert!(worst <= 2.0 * f64::from(AdamW::default().kernel().step_error_budget));
        // One element of one tensor off by a few hundred ulp: refused, naming it.
        let mut bad = w.gpu(&ctx, storage).unwrap();
        let tensor = &bad.params()[77];
        let mut p = tensor.read(&ctx).unwrap();
        p[5] *= 1.0 + 300.0 * f32::EPSILON;
        tensor.write(&ctx, &p).unwrap();
        match w.check(&ctx, &mut bad, 2) {
            Err(Error::ResultMismatch(message)) => assert!(message.contains("tensor 77 params[5]"), "{message}"),
            other => panic!("{storage:?}: expected a refusal, got {other:?}"),
        }
    }
}
