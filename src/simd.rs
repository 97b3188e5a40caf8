//! Runtime CPU feature dispatch for the CPU side's inner loops.
//!
//! The CPU reference uses `f32::mul_add` exactly where torch's vectorised CPU kernels use a
//! fused multiply-add. Compiled for baseline x86-64 that call is a libm routine and the loops
//! do not vectorise: the CPU baseline would be a strawman, 5–10× slower than the machine can
//! do. Instead of asking every crate that depends on this one for `-C target-cpu`, the loops
//! are compiled twice — once for the baseline and once with AVX2 and FMA enabled — and the
//! CPU picks one when it runs. On aarch64 NEON and FMA are part of the baseline, so there is
//! nothing to choose. Both versions give the same bits: `mul_add` is exactly rounded either
//! way, and no other operation changes.

/// `dispatch!(Type, self.method(args…))` in a method of `Type`: calls `method` through a
/// copy compiled with AVX2 and FMA when the CPU has them, else directly. `method` must be
/// `#[inline(always)]`, so that its whole body (loops and the closures they call) is
/// compiled inside the copy — a closure handed to a dispatching function is not reliably
/// inlined, and an update the vectoriser sees only in pieces stays scalar.
macro_rules! dispatch {
    ($ty:ty, $self:ident . $method:ident ( $($arg:ident),* )) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            fn with_avx2_fma(o: &$ty, $($arg: $crate::simd::Arg!($arg)),*) {
                o.$method($($arg),*)
            }
            if $crate::simd::has_avx2_fma() {
                // SAFETY: the CPU has AVX2 and FMA, checked just above.
                return unsafe { with_avx2_fma($self, $($arg),*) };
            }
        }
        $self.$method($($arg),*)
    }};
}
pub(crate) use dispatch;

/// The type of each argument of a CPU update, by its name (for the x86-64 copy).
#[cfg(target_arch = "x86_64")]
macro_rules! Arg {
    (step) => { u64 };
    (p) => { &mut [f32] };
    (g) => { &[f32] };
    (state) => { $crate::optim::StateSlices<'_, '_> };
}
#[cfg(target_arch = "x86_64")]
pub(crate) use Arg;

/// Whether this x86-64 CPU has AVX2 and FMA (detected once, then a cached load).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn has_avx2_fma() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

#[cfg(test)]
mod tests {
    use crate::optim::{Adam, Optimizer, RmsProp};

    /// One optimizer's update, dispatched or not.
    type Update<'a> = dyn Fn(bool, u64, &mut [f32], &[f32], crate::optim::StateSlices<'_, '_>) + 'a;

    fn bits(x: &[f32]) -> Vec<u32> {
        x.iter().map(|v| v.to_bits()).collect()
    }

    /// The dispatched update (AVX2 + FMA where the CPU has them) gives the bits of the
    /// baseline compile of the same code, for updates built of mul_add, sqrt and division.
    #[test]
    fn the_dispatched_update_rounds_as_the_baseline() {
        let n = 4099;
        let g: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 1e-2).collect();
        let p0: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
        let adam = Adam::new(1e-2).with_weight_decay(0.1).with_amsgrad(true);
        let rms = RmsProp { centered: true, momentum: 0.9, weight_decay: 0.1, ..RmsProp::default() };
        let run = |dispatched: bool, o: &Update<'_>| {
            let (mut p, mut a, mut b, mut c) = (p0.clone(), vec![0.0; n], vec![0.0; n], vec![0.0; n]);
            for step in 1..=3 {
                o(dispatched, step, &mut p, &g, &mut [&mut a[..], &mut b[..], &mut c[..]]);
            }
            [bits(&p), bits(&a), bits(&b), bits(&c)]
        };
        let adam_step = |d: bool, t, p: &mut [f32], g: &[f32], s: crate::optim::StateSlices<'_, '_>| {
            if d { adam.update_cpu(t, p, g, s) } else { adam.update_elements(t, p, g, s) }
        };
        let rms_step = |d: bool, t, p: &mut [f32], g: &[f32], s: crate::optim::StateSlices<'_, '_>| {
            if d { rms.update_cpu(t, p, g, s) } else { rms.update_elements(t, p, g, s) }
        };
        assert_eq!(run(true, &adam_step), run(false, &adam_step));
        assert_eq!(run(true, &rms_step), run(false, &rms_step));
    }
}
