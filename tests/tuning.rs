//! Per-device choices: the scalar binding and runtime checks change no result, the adapter
//! table applies what was measured, and a saved tuning loads back only on its adapter.

mod common;

use common::{ctx, ctx_with, family_run, grads, params};
use wgpu_optim::tuning::{SavedTuning, adapter_family};
use wgpu_optim::{AdapterRequest, Error, GpuContext, GpuOptimizer, Optimizer, ScalarBinding, Tuning};

#[test]
fn every_family_steps_bit_for_bit_with_either_scalar_binding_and_with_or_without_runtime_checks() {
    // The same bytes read from a uniform or a storage table, and the same kernels with or
    // without wgpu's runtime checks: every family (element-wise, staged, shaped) gives the
    // same bits, one step per submit and several, on a length with a tail.
    let n = 1001;
    for (name, make) in wgpu_optim::optim::ALL {
        let o: Box<dyn Optimizer> = make();
        let run = |ctx: &GpuContext| family_run(ctx, &*o, n, 3);
        let mut results = Vec::new();
        for scalars in ScalarBinding::ALL {
            for runtime_checks in [true, false] {
                let ctx = ctx_with(|t| {
                    t.scalars = scalars;
                    t.runtime_checks = runtime_checks;
                });
                results.push(((scalars, runtime_checks), run(&ctx)));
            }
        }
        let (first, (p0, s0, steps0)) = &results[0];
        assert_eq!(*steps0, 6, "{name}: steps taken");
        assert_ne!(*p0, params(p0.len()), "{name}: the steps moved the parameters");
        for (tuning, (p, s, steps)) in &results[1..] {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(p), bits(p0), "{name}: parameters under {tuning:?} vs {first:?}");
            assert_eq!(s.len(), s0.len(), "{name}: state tensors");
            for (a, b) in s.iter().zip(s0) {
                assert_eq!(bits(a), bits(b), "{name}: state under {tuning:?} vs {first:?}");
            }
            assert_eq!(steps, steps0, "{name}: steps taken under {tuning:?}");
        }
    }
}

#[test]
fn small_tensors_step_bit_for_bit_with_fewer_items_per_invocation() {
    // min_workgroups 64 at 8 items per invocation: every tensor here below 64 × 256 × 8
    // vec4s is dispatched with fewer items (its own pipelines, the last dispatch's included);
    // every family gives the bits of min_workgroups 1, separate tensors in a group, tails and
    // several steps per submit included.
    use wgpu_optim::{GpuTensor, ParamGroup, ParamGroups};
    let lens = [1001usize, 4099, 70001, 12];
    for (name, make) in wgpu_optim::optim::ALL {
        let o: Box<dyn Optimizer> = make();
        if o.kernel().is_shaped() {
            continue; // planned per matrix by its own stages (src/factored.rs)
        }
        let run = |min_workgroups: u32| {
            let ctx = ctx_with(|t| {
                t.items_per_invocation = 8;
                t.min_workgroups = min_workgroups;
            });
            let ps: Vec<GpuTensor> = lens.iter().map(|&n| GpuTensor::from_slice(&ctx, &params(n)).unwrap()).collect();
            let gs: Vec<GpuTensor> = lens.iter().map(|&n| GpuTensor::from_slice(&ctx, &grads(n, 1)).unwrap()).collect();
            let mut groups =
                ParamGroups::new(&ctx, vec![ParamGroup::new(o.clone_box(), ps.iter().collect(), gs.iter().collect())])
                    .unwrap();
            groups.run(1).unwrap();
            groups.run(3).unwrap();
            let out: Vec<Vec<u32>> =
                ps.iter().map(|p| p.read(&ctx).unwrap().iter().map(|x| x.to_bits()).collect()).collect();
            (out, groups.sync().unwrap())
        };
        let (spread, steps) = run(64);
        assert_eq!((spread, steps), run(1), "{name}: bit for bit");
        assert_eq!(steps, 4, "{name}: steps taken");
    }
}

fn info(name: &str) -> wgpu::AdapterInfo {
    wgpu::AdapterInfo { name: name.into(), ..ctx().adapter_info().clone() }
}

#[test]
fn the_adapter_table_applies_what_was_measured_and_nothing_elsewhere() {
    let limits = ctx().limits().clone();
    let lavapipe = info("llvmpipe (LLVM 15.0.6, 256 bits)");
    assert_eq!(adapter_family(&lavapipe), Some("Mesa llvmpipe (lavapipe)"));
    let measured = Tuning::for_adapter(&lavapipe, &limits);
    assert_eq!(measured.scalars, ScalarBinding::Uniform, "measured 18 % faster there");
    let threads = std::thread::available_parallelism().unwrap().get() as u32;
    assert_eq!(
        measured,
        Tuning {
            scalars: ScalarBinding::Uniform,
            min_workgroups: threads,
            tiled_products: false,
            ..Tuning::for_limits(&limits)
        },
        "and a dispatch gets a workgroup per thread where it can"
    );
    // An adapter of no measured family gets the limits' defaults.
    let other = info("Some GPU nobody measured");
    assert_eq!(adapter_family(&other), None);
    assert_eq!(Tuning::for_adapter(&other, &limits), Tuning::for_limits(&limits));
    // A device whose uniform bindings cannot hold the table keeps it in storage, and asking
    // for a uniform table there is refused, naming the limit.
    let small = wgpu::Limits { max_uniform_buffer_binding_size: 16384, ..limits };
    assert_eq!(Tuning::for_adapter(&lavapipe, &small).scalars, ScalarBinding::Storage);
    let uniform = Tuning { scalars: ScalarBinding::Uniform, ..Tuning::for_limits(&small) };
    match uniform.validate(&small) {
        Err(Error::InvalidTuning(m)) => assert!(m.contains("max_uniform_buffer_binding_size is 16384"), "{m}"),
        other => panic!("expected InvalidTuning, got {other:?}"),
    }
    // The context this machine opens uses the table.
    let ctx = ctx();
    assert_eq!(*ctx.tuning(), Tuning::for_adapter(ctx.adapter_info(), ctx.limits()));
}

#[test]
fn a_saved_tuning_loads_back_on_its_adapter_and_is_refused_on_another() {
    let dir = std::env::temp_dir().join(format!("wgpu-optim-tuning-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tuning.json");
    let base = ctx();
    let tuned = Tuning {
        workgroup_size: 128,
        items_per_invocation: 2,
        scalars: ScalarBinding::Storage,
        runtime_checks: true,
        ..base.tuning().clone()
    };
    SavedTuning::new(base.adapter_info(), tuned.clone()).save(&path).unwrap();
    let saved = SavedTuning::load(&path).unwrap();
    assert_eq!(saved.tuning_for(base.adapter_info(), &path).unwrap(), tuned);
    // Opened through the request (WGPU_OPTIM_TUNING's field), the context runs with it.
    let request = AdapterRequest { tuning: Some(path.clone()), ..AdapterRequest::default() };
    let ctx = GpuContext::with_request(&request).unwrap();
    assert_eq!(*ctx.tuning(), tuned);
    let mut gpu = GpuOptimizer::new(&ctx, wgpu_optim::AdamW::new(1e-2), &params(1001)).unwrap();
    gpu.step(&grads(1001, 1)).unwrap();
    assert_eq!(gpu.sync().unwrap(), 1);
    // Another adapter's tuning is refused, naming both adapters.
    let elsewhere = info("Another GPU");
    match saved.tuning_for(&elsewhere, &path) {
        Err(e @ Error::TuningFile { .. }) => {
            let m = e.to_string();
            assert!(m.contains("Another GPU") && m.contains(&base.adapter_info().name), "{m}");
            assert!(m.contains("tune --save"), "says what to do: {m}");
        }
        other => panic!("expected TuningFile, got {other:?}"),
    }
    // A file that is not a saved tuning, or none, is an error naming the file.
    std::fs::write(&path, "{ \"adapter\": 3 }").unwrap();
    for (what, p) in [("garbage", path.clone()), ("missing", dir.join("none.json"))] {
        match SavedTuning::load(&p) {
            Err(e @ Error::TuningFile { .. }) => assert!(e.to_string().contains(&*p.to_string_lossy()), "{what}: {e}"),
            other => panic!("{what}: expected TuningFile, got {other:?}"),
        }
        let request = AdapterRequest { tuning: Some(p), ..AdapterRequest::default() };
        assert!(matches!(GpuContext::with_request(&request), Err(Error::TuningFile { .. })), "{what}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
