//! Every failure a user can cause returns the right `Error`, and leaves things as they were.

mod common;

use common::*;
use wgpu_optim::{
    AdaBelief, Adadelta, Adagrad, Adam, AdamW, Adamax, AdapterRequest, CpuOptimizer, Error, GpuContext, GpuOptimizer,
    GpuTensor, Lion, NAdam, Optimizer, RAdam, RmsProp, SCALAR_SLOTS, Sgd,
};

fn message(o: impl Into<Box<dyn Optimizer>>) -> String {
    match CpuOptimizer::new(o, &[1.0f32]) {
        Err(Error::InvalidHyperParameter { message, .. }) => message,
        other => panic!("expected InvalidHyperParameter, got {other:?}"),
    }
}

#[test]
fn invalid_hyper_parameters_give_torchs_messages() {
    // Messages as torch.optim 2.x raises them (spec §1, §2).
    assert_eq!(message(Sgd::new(-0.1)), "Invalid learning rate: -0.1");
    assert_eq!(message(Sgd::new(f64::NAN)), "Invalid learning rate: nan");
    assert_eq!(message(Sgd::new(0.1).with_momentum(-1.0)), "Invalid momentum value: -1.0");
    assert_eq!(message(Sgd::new(0.1).with_weight_decay(-1e-5)), "Invalid weight_decay value: -1e-05");
    assert_eq!(message(Sgd::new(0.1).with_nesterov(true)), "Nesterov momentum requires a momentum and zero dampening");
    assert_eq!(
        message(Sgd::new(0.1).with_momentum(0.9).with_dampening(0.1).with_nesterov(true)),
        "Nesterov momentum requires a momentum and zero dampening"
    );
    let adam = |f: &dyn Fn(&mut Adam)| {
        let mut a = Adam::default();
        f(&mut a);
        a
    };
    assert_eq!(message(adam(&|a| a.lr = -1.0)), "Invalid learning rate: -1.0");
    assert_eq!(message(adam(&|a| a.eps = -1e-8)), "Invalid epsilon value: -1e-08");
    assert_eq!(message(adam(&|a| a.betas.0 = 1.0)), "Invalid beta parameter at index 0: 1.0");
    assert_eq!(message(adam(&|a| a.betas.1 = -0.5)), "Invalid beta parameter at index 1: -0.5");
    assert_eq!(message(adam(&|a| a.betas.1 = f64::NAN)), "Invalid beta parameter at index 1: nan");
    assert_eq!(message(adam(&|a| a.weight_decay = -0.01)), "Invalid weight_decay value: -0.01");
    assert_eq!(message(AdamW::default().with_eps(-1.0)), "Invalid epsilon value: -1.0");
    assert_eq!(message(AdamW::default().with_weight_decay(-2.0)), "Invalid weight_decay value: -2.0");
    assert_eq!(message(AdamW::default().with_betas(-0.1, 0.9)), "Invalid beta parameter at index 0: -0.1");
    assert_eq!(message(AdamW::new(-1.0)), "Invalid learning rate: -1.0");
    assert_eq!(message(AdamW::new(1e-3).with_betas(0.9, 1.0)), "Invalid beta parameter at index 1: 1.0");
    // The same checks guard the GPU path, before anything is allocated.
    let ctx = ctx();
    assert!(matches!(
        GpuOptimizer::new(&ctx, AdamW::new(-1.0), &[1.0f32]),
        Err(Error::InvalidHyperParameter { optimizer: "AdamW", .. })
    ));
    // Boundary values torch accepts are accepted.
    CpuOptimizer::new(Adam::default().with_eps(0.0).with_betas(0.0, 0.0), &[1.0f32]).unwrap();
    CpuOptimizer::new(Sgd::new(0.0), &[1.0f32]).unwrap();
}

#[test]
fn every_optimizer_checks_its_own_hyper_parameters() {
    // torch.optim's messages (spec §3-§8); AdaBelief and Lion as their packages check.
    assert_eq!(message(NAdam::default().with_momentum_decay(-1.0)), "Invalid momentum_decay value: -1.0");
    assert_eq!(message(NAdam::default().with_betas(1.0, 0.9)), "Invalid beta parameter at index 0: 1.0");
    assert_eq!(message(RAdam::new(-0.5)), "Invalid learning rate: -0.5");
    assert_eq!(message(RAdam::default().with_eps(-1.0)), "Invalid epsilon value: -1.0");
    assert_eq!(message(Adagrad::default().with_lr_decay(-0.1)), "Invalid lr_decay value: -0.1");
    assert_eq!(
        message(Adagrad::default().with_initial_accumulator_value(-1.0)),
        "Invalid initial_accumulator_value value: -1.0"
    );
    assert_eq!(message(RmsProp::default().with_alpha(-0.1)), "Invalid alpha value: -0.1");
    assert_eq!(message(RmsProp::default().with_momentum(-0.9)), "Invalid momentum value: -0.9");
    assert_eq!(message(Adamax::default().with_betas(0.9, 1.5)), "Invalid beta parameter at index 1: 1.5");
    assert_eq!(message(Adadelta::default().with_rho(1.5)), "Invalid rho value: 1.5");
    assert_eq!(message(AdaBelief::default().with_eps(-1e-16)), "Invalid epsilon value: -1e-16");
    assert_eq!(message(Lion::new(0.0)), "Invalid learning rate: 0.0 (Lion needs lr > 0)");
    assert_eq!(message(Lion::default().with_betas(0.9, 1.1)), "Invalid beta parameter at index 1: 1.1");
    // What torch accepts is accepted: rho = 1, alpha > 1, beta = 1 for Lion.
    CpuOptimizer::new(Adadelta::default().with_rho(1.0), &[1.0f32]).unwrap();
    CpuOptimizer::new(RmsProp::default().with_alpha(1.5), &[1.0f32]).unwrap();
    CpuOptimizer::new(Lion::default().with_betas(1.0, 1.0), &[1.0f32]).unwrap();
}

#[test]
fn adagrad_state_starts_at_the_initial_accumulator_value() {
    let ctx = ctx();
    let o = Adagrad::new(0.1).with_initial_accumulator_value(0.25);
    let gpu = GpuOptimizer::new(&ctx, o.clone(), &[1.0f32; 1000]).unwrap();
    let cpu = CpuOptimizer::new(o, &[1.0f32; 1000]).unwrap();
    assert!(gpu.read_state("sum").unwrap().iter().all(|&x| x == 0.25));
    assert!(cpu.state_tensor("sum").unwrap().iter().all(|&x| x == 0.25));
}

#[test]
fn an_invalid_learning_rate_change_is_refused_and_changes_nothing() {
    let ctx = ctx();
    let mut gpu = GpuOptimizer::new(&ctx, Adam::new(1e-3), &[1.0f32; 5]).unwrap();
    assert!(matches!(gpu.set_lr(-1.0), Err(Error::InvalidHyperParameter { .. })));
    assert_eq!(gpu.optimizer().lr(), 1e-3);
    gpu.set_lr(2e-3).unwrap();
    assert_eq!(gpu.optimizer().lr(), 2e-3);
    let mut cpu = CpuOptimizer::new(Sgd::new(0.1), &[1.0f32]).unwrap();
    assert!(cpu.set_lr(f64::NAN).is_err());
    assert_eq!(cpu.optimizer().lr(), 0.1);
}

#[test]
fn mismatched_lengths_are_errors_and_leave_state_untouched() {
    let ctx = ctx();
    let p = params(10);
    let mut cpu = CpuOptimizer::new(Adam::default(), &p).unwrap();
    assert!(matches!(cpu.step(&grads(9, 1)), Err(Error::LengthMismatch { what: "grads", expected: 10, actual: 9 })));
    assert_eq!(cpu.step_count(), 0);
    assert_eq!(cpu.params().to_vec(), p);

    let mut gpu = GpuOptimizer::new(&ctx, Adam::default(), &p).unwrap();
    assert!(matches!(gpu.step(&grads(11, 1)), Err(Error::LengthMismatch { expected: 10, actual: 11, .. })));
    assert_eq!(gpu.step_count(), 0);
    assert_eq!(gpu.read_params().unwrap().to_vec(), p);

    let a = GpuTensor::zeros(&ctx, 10).unwrap();
    let b = GpuTensor::zeros(&ctx, 12).unwrap();
    assert!(matches!(
        GpuOptimizer::from_tensors(&ctx, Sgd::default(), a.clone(), b),
        Err(Error::LengthMismatch { what: "grads", expected: 10, actual: 12 })
    ));
    assert!(matches!(a.write(&ctx, &[0.0; 3]), Err(Error::LengthMismatch { .. })));
}

#[test]
fn tensors_split_differently_cannot_be_bound_together() {
    let ctx = ctx();
    let small = ctx_with(|t| t.segment_bytes = 4096);
    let n = 3000;
    let p = GpuTensor::zeros(&ctx, n).unwrap();
    let g = GpuTensor::zeros(&small, n).unwrap();
    assert!(g.segments().len() > 1);
    assert!(matches!(GpuOptimizer::from_tensors(&ctx, Sgd::default(), p, g), Err(Error::LayoutMismatch { .. })));
}

#[test]
fn empty_tensors_are_refused() {
    let ctx = ctx();
    assert!(matches!(CpuOptimizer::new(Sgd::default(), &Vec::<f32>::new()), Err(Error::Empty { .. })));
    assert!(matches!(GpuOptimizer::new(&ctx, Sgd::default(), &Vec::<f32>::new()), Err(Error::Empty { .. })));
}

#[test]
fn caller_buffers_are_validated() {
    let ctx = ctx();
    let make = |size, usage| {
        ctx.device().create_buffer(&wgpu::BufferDescriptor { label: None, size, usage, mapped_at_creation: false })
    };
    let uniform = make(1024, wgpu::BufferUsages::UNIFORM);
    assert!(matches!(
        GpuTensor::from_buffer(&ctx, &uniform, 0, 16),
        Err(Error::MissingUsage { missing: wgpu::BufferUsages::STORAGE, .. })
    ));
    let storage = make(1024, wgpu::BufferUsages::STORAGE);
    assert!(matches!(GpuTensor::from_buffer(&ctx, &storage, 4, 16), Err(Error::BadBufferRange { .. })));
    assert!(matches!(GpuTensor::from_buffer(&ctx, &storage, 0, 257), Err(Error::BadBufferRange { .. })));
    assert!(matches!(GpuTensor::from_buffer(&ctx, &storage, 0, 0), Err(Error::Empty { .. })));
    // An end past u64 is refused, not wrapped round: the largest aligned offset.
    let align = u64::from(ctx.limits().min_storage_buffer_offset_alignment);
    let last = u64::MAX / align * align;
    assert!(matches!(GpuTensor::from_buffer(&ctx, &storage, last, 16), Err(Error::BadBufferRange { .. })));
    // Readable only with COPY_SRC.
    let t = GpuTensor::from_buffer(&ctx, &storage, 0, 256).unwrap();
    assert!(matches!(t.read(&ctx), Err(Error::MissingUsage { missing: wgpu::BufferUsages::COPY_SRC, .. })));
}

#[test]
fn wgpu_validation_errors_are_returned_not_panicked() {
    // A destroyed buffer cannot be bound: wgpu's validation error comes back as Error::Wgpu
    // instead of reaching wgpu's panicking default handler.
    let ctx = ctx();
    // So does a caller's kernel that does not compile, with the shader's own message.
    match ctx.compile_kernel("broken", "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }", "main") {
        Err(Error::Wgpu { during, message }) => {
            assert!(during.contains("kernel") && message.contains("broken"), "{message}")
        }
        other => panic!("expected Error::Wgpu, got {other:?}"),
    }
    let gone = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("destroyed"),
        size: 4096,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let p = GpuTensor::from_buffer(&ctx, &gone, 0, 100).unwrap();
    gone.destroy();
    let g = GpuTensor::zeros(&ctx, 100).unwrap();
    match GpuOptimizer::from_tensors(&ctx, Sgd::default(), p, g) {
        Err(Error::Wgpu { during, message }) => {
            assert_eq!(during, "binding tensors");
            assert!(message.contains("destroyed"), "{message}");
        }
        other => panic!("expected Error::Wgpu, got {other:?}"),
    }
}

#[test]
fn a_buffer_of_another_device_is_refused() {
    let storage = |ctx: &GpuContext| {
        ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("another device's"),
            size: 4096,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        })
    };
    // Two devices of one wgpu instance.
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::PRIMARY,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let open = || {
        let adapter = pollster::block_on(instance.request_adapter(&Default::default())).expect("an adapter");
        let (device, queue) = pollster::block_on(adapter.request_device(&Default::default())).expect("a device");
        GpuContext::from_device(device, queue, adapter.get_info()).unwrap()
    };
    let (a, b) = (open(), open());
    let foreign = storage(&b);
    assert!(matches!(GpuTensor::from_buffer(&a, &foreign, 0, 100), Err(Error::ForeignDevice { .. })));
    GpuTensor::from_buffer(&b, &foreign, 0, 100).unwrap();
    // A device of another instance.
    let other = common::ctx();
    let foreign = storage(&other);
    assert!(matches!(GpuTensor::from_buffer(&a, &foreign, 0, 100), Err(Error::ForeignDevice { .. })));
}

#[test]
fn too_many_steps_for_one_record_is_an_error() {
    let ctx = ctx();
    let mut gpu = GpuOptimizer::new(&ctx, Sgd::default(), &[1.0f32; 4]).unwrap();
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    assert!(matches!(gpu.record(&mut encoder, SCALAR_SLOTS + 1), Err(Error::OverLimit(_))));
    assert_eq!(gpu.step_count(), 0);
}

#[test]
fn unusable_tuning_is_refused() {
    let ctx = ctx();
    let mut t = ctx.tuning().clone();
    t.segment_bytes = 1000; // not a multiple of the alignment
    assert!(matches!(ctx.with_tuning(t), Err(Error::InvalidTuning(_))));
    let mut t = ctx.tuning().clone();
    t.workgroup_size = 0;
    assert!(matches!(ctx.with_tuning(t), Err(Error::InvalidTuning(_))));
    let mut t = ctx.tuning().clone();
    t.buffer_bytes = t.segment_bytes / 2;
    assert!(matches!(ctx.with_tuning(t), Err(Error::InvalidTuning(_))));
}

#[test]
fn no_matching_adapter_says_how_to_install_one() {
    let request = AdapterRequest { name: Some("no adapter has this name".into()), ..AdapterRequest::default() };
    let err = GpuContext::with_request(&request).unwrap_err();
    assert!(matches!(err, Error::NoAdapter { .. }));
    assert!(err.to_string().contains("mesa-vulkan-drivers"), "{err}");
}

#[test]
fn errors_name_what_failed() {
    let ctx = ctx();
    let gpu = GpuOptimizer::new(&ctx, AdamW::default(), &params(8)).unwrap();
    match gpu.read_state("momentum_buffer") {
        Err(e @ Error::UnknownState { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("AdamW") && text.contains("exp_avg_sq") && text.contains("momentum_buffer"),
                "{text}"
            );
        }
        other => panic!("expected UnknownState, got {other:?}"),
    }
    let strided = ndarray::Array1::from(params(8));
    let strided = strided.slice(ndarray::s![..;2]);
    assert!(matches!(
        CpuOptimizer::new(AdamW::default(), &strided),
        Err(Error::NotContiguous { what: "ndarray view" })
    ));
}
