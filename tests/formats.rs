//! Element formats in the tensor model: every tensor knows its format, and its sizes, views
//! and reads follow the format's bytes per element.

mod common;

use common::*;
use wgpu_optim::{Adam, CpuOptimizer, ElementFormat, GpuOptimizer, GpuTensor, HostTensor, Optimizer};

#[test]
fn a_tensor_knows_its_format_and_sizes_follow_it() {
    let ctx = ctx();
    let f = ElementFormat::F32;
    assert_eq!((f.bytes(), f.name()), (4, "f32"));
    assert_eq!(f.elements_in(256), 64);
    assert!(f.size_of("huge", usize::MAX).is_err() || usize::BITS < 64);
    let t = GpuTensor::zeros_of(&ctx, f, 1000).unwrap();
    assert_eq!(t.format(), f);
    assert!(t.segments().iter().all(|s| s.format == f));
    assert_eq!(t.read_bytes(&ctx).unwrap().len(), 4000);
    // Views keep the format; bytes written are the elements in that format.
    let data = params(1000);
    t.write_bytes(&ctx, bytemuck::cast_slice(&data)).unwrap();
    assert_eq!(t.read(&ctx).unwrap(), data);
    let align = f.elements_in(u64::from(ctx.limits().min_storage_buffer_offset_alignment)) as usize;
    let view = t.slice(&ctx, align, 10).unwrap();
    assert_eq!((view.format(), view.read(&ctx).unwrap()), (f, data[align..align + 10].to_vec()));
    // A byte count that is not whole elements of the tensor is refused.
    assert!(t.write_bytes(&ctx, &[0u8; 3999]).is_err());
    assert_eq!(t.read(&ctx).unwrap(), data);
    // Host data in a format converts back to its values.
    assert_eq!(HostTensor::from_f32s(&data).to_f32s().unwrap(), data);
    assert_eq!(HostTensor::from_f32s(&data).len(), 1000);
}

#[test]
fn every_state_slot_is_kept_in_its_optimizers_format() {
    let ctx = ctx();
    let o = Adam::new(1e-2).with_amsgrad(true);
    let gpu = GpuOptimizer::new(&ctx, o.clone(), &params(100)).unwrap();
    for (i, (slot, t)) in gpu.state().enumerate() {
        assert_eq!(t.format(), o.state_format(i), "{}", slot.torch_name);
    }
    let cpu = CpuOptimizer::new(o, &params(100)).unwrap();
    assert_eq!(cpu.state().count(), 3);
}
