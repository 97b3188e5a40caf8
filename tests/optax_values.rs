//! LAMB and LARS against optax's `lamb` and `lars` (values printed by
//! scripts/optax_reference.py): one tensor, and the same 32 values as two tensors of a
//! group, each with its own trust ratio.

mod common;

use common::*;
use wgpu_optim::{CpuOptimizer, GpuTensor, Optimizer, ParamGroup, ParamGroups};

const N: usize = 32;
const STEPS: usize = 8;

#[rustfmt::skip]
const OPTAX: &[(&str, [u32; N])] = &[
// optax 0.2.8, jax 0.10.2, CPU, float32; N = 32, 8 steps
    ("lamb", [0xc000caa3, 0x3fecaf6d, 0x3fd1fbcc, 0x3fbaf25b, 0x3fab540a, 0x3f90507d, 0x3f731d12, 0x3f53ef83, 0x3f1d2a0c, 0x3ee0c3ca, 0x3ea275cd, 0x3e685bca, 0xbd9242ef, 0xbe45c05d, 0xbe92bcc8, 0xbf14dd96, 0xbf340c21, 0xbf4ce64a, 0xbf8bad07, 0xbf8a94fd, 0xbfa83b82, 0xbfccdd53, 0xbfcbc7ba, 0xbfea0610, 0x3fe64199, 0x3fe739f7, 0x3fc86f4d, 0x3fa530b2, 0x3fa5f24a, 0x3f86a799, 0x3f77021a, 0x3f494779]),
    ("lamb wd", [0xbff9708d, 0x3fe6b6e9, 0x3fcd4549, 0x3fb87b1d, 0x3fa72de6, 0x3f8d7784, 0x3f71d1cd, 0x3f4f48f6, 0x3f1b300d, 0x3ee56c68, 0x3ea072aa, 0x3e4fcabd, 0xbd459b24, 0xbe3b3c85, 0xbe97b99b, 0xbf0b5b31, 0xbf2dccb6, 0xbf4bb736, 0xbf8525ea, 0xbf8a97c2, 0xbfa5c9e3, 0xbfc494ba, 0xbfca0354, 0xbfe5b7d8, 0x3fe57dea, 0x3fe000af, 0x3fc3d2ae, 0x3fa6248f, 0x3fa087bd, 0x3f83e962, 0x3f700b9b, 0x3f421565]),
    ("lamb 20+12", [0xc0002492, 0x3fec3c5f, 0x3fd240e3, 0x3fbae133, 0x3fab20aa, 0x3f90de4a, 0x3f737c07, 0x3f5407b9, 0x3f1edb0f, 0x3ee2833c, 0x3ea3a192, 0x3e5d7fa0, 0xbd87495d, 0xbe417ad2, 0xbe96fcfa, 0xbf1300f7, 0xbf328237, 0xbf4e6cd0, 0xbf8a8164, 0xbf8c2006, 0xbfa77182, 0xbfce77a4, 0xbfc96ba3, 0xbfe9f664, 0x3fe4090d, 0x3fe8f6a2, 0x3fc7c42c, 0x3fa25e8b, 0x3fa70c83, 0x3f854244, 0x3f7cadbb, 0x3f4a3350]),
    ("lamb wd 20+12", [0xbff98926, 0x3fe71d35, 0x3fce0ed5, 0x3fb8cc8c, 0x3fa78d70, 0x3f8e4176, 0x3f726a43, 0x3f4ff9e3, 0x3f1cc90e, 0x3ee6882f, 0x3ea1b5f0, 0x3e49eaac, 0xbd3d6fee, 0xbe38f98a, 0xbe9a98d3, 0xbf0ae4b9, 0xbf2d4edf, 0xbf4d1d77, 0xbf84f187, 0xbf8bd782, 0xbfa49551, 0xbfc4430a, 0xbfc8097c, 0xbfe4894d, 0x3fe354dc, 0x3fdf81e7, 0x3fc276ca, 0x3fa4076a, 0x3fa013b6, 0x3f82878b, 0x3f7161fa, 0x3f4141f4]),
    ("lars", [0xbff83671, 0x3fe8f651, 0x3fd3341b, 0x3fbd0fae, 0x3fa8fb3f, 0x3f933909, 0x3f7a2937, 0x3f520054, 0x3f267beb, 0x3ef46622, 0x3ea4145c, 0x3e28821f, 0xbcb862ae, 0xbe37afdf, 0xbeabab3e, 0xbf05b93c, 0xbf2de21f, 0xbf55cbc4, 0xbf82d7b0, 0xbf9486b1, 0xbfaae0f6, 0xbfc2d2c4, 0xbfd481c4, 0xbfeadc09, 0x3ff17229, 0x3fdfc327, 0x3fc968e5, 0x3fb17716, 0x3f9fc814, 0x3f896dd1, 0x3f69fa49, 0x3f3f9a05]),
    ("lars wd nesterov", [0xc003480a, 0x3fef54de, 0x3fd20197, 0x3fb659d0, 0x3fad546a, 0x3f900124, 0x3f68b2b7, 0x3f56a7ec, 0x3f1c0161, 0x3ec963a1, 0x3ea54e0a, 0x3e856884, 0xbdfa78be, 0xbe456789, 0xbe829949, 0xbf234ffe, 0xbf355ac9, 0xbf454d8c, 0xbf93a874, 0xbf8203df, 0xbfa4a73b, 0xbfd5a8e7, 0xbfc40453, 0xbfe6a7ae, 0x3fd8f827, 0x3fea9cbb, 0x3fc7f960, 0x3f96f7b4, 0x3fa89c49, 0x3f85f8ec, 0x3f7dc108, 0x3f4d37aa]),
    ("lars wd nesterov 20+12", [0xc002170b, 0x3fee3ba6, 0x3fd22fde, 0x3fb722a6, 0x3fac89be, 0x3f907df6, 0x3f6ae17d, 0x3f55afae, 0x3f1d981b, 0x3ecefb5c, 0x3ea497be, 0x3e7a9d2f, 0xbddf3112, 0xbe445fc1, 0xbe897908, 0xbf1f49f2, 0xbf347bc0, 0xbf482052, 0xbf9156e1, 0xbf851471, 0xbfa30a98, 0xbfd902fc, 0xbfbff0c9, 0xbfe578c8, 0x3fd47ffc, 0x3fed922f, 0x3fc80a32, 0x3f9211ce, 0x3fab2401, 0x3f859c02, 0x3f7f6bbf, 0x3f516ba2]),
    ("lars excluded", [0xc00ab0f6, 0x3ff51247, 0x3fcafc40, 0x3fbf621f, 0x3fb01187, 0x3f85fb80, 0x3f74c2be, 0x3f56218d, 0x3f01f581, 0x3ed58281, 0x3e984019, 0x3eab8000, 0xbdfa01fa, 0xbe7785cb, 0xbe510603, 0xbf2941c0, 0xbf47e2f3, 0xbf3e42fe, 0xbf99a1a1, 0xbf6f67db, 0xbfa4223f, 0xbfdea261, 0xbfbcb4ae, 0xbfe922ff, 0x3fd09cdf, 0x3ff28a92, 0x3fc61c41, 0x3f8b9c1f, 0x3fad89d2, 0x3f811b81, 0x3f9172f3, 0x3f511226]),
];

/// The tensor lengths a label's last word gives (`20+12`), or one tensor of N.
fn parts(label: &str) -> Vec<usize> {
    let last = label.rsplit(' ').next().unwrap();
    if last.contains('+') { last.split('+').map(|n| n.parse().unwrap()).collect() } else { vec![N] }
}

/// The configuration of a row: the variants table's, without the tensor split.
fn config(label: &str) -> Box<dyn Optimizer> {
    variant(label.trim_end_matches(" 20+12"))
}

// LAMB: optax computes the bias corrections in f32 (1 - beta^t rounded at each power) where this
// crate rounds f64 ones once, lets XLA order the moment updates, and sums the norms in its
// own order; the trust ratio cancels most of the bias corrections' scale, and what is left
// stays within LAMB's step budget of (|p| + movement) per step.
#[test]
fn the_cpu_reference_matches_optax() {
    for (label, bits) in OPTAX {
        let want: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
        let mut got = Vec::new();
        let mut start = 0;
        for n in parts(label) {
            let mut cpu = CpuOptimizer::new(config(label), &params(N)[start..start + n]).unwrap();
            for k in 1..=STEPS {
                cpu.step(&grads(N, k)[start..start + n]).unwrap();
            }
            got.extend_from_slice(cpu.params().as_slice().unwrap());
            start += n;
        }
        let budget = config(label).kernel().step_error_budget;
        let worst = assert_close(label, &got, &want, max_change(&params(N), &want), STEPS, budget);
        eprintln!("{label}: CPU vs optax {worst:.2} ε·scale");
    }
}

#[test]
fn a_group_of_tensors_gets_a_trust_ratio_per_tensor_on_the_gpu() {
    let ctx = ctx();
    for (label, bits) in OPTAX {
        let want: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
        let lens = parts(label);
        let mut starts = vec![0];
        for n in &lens {
            starts.push(starts.last().unwrap() + n);
        }
        let p: Vec<GpuTensor> = lens
            .iter()
            .zip(&starts)
            .map(|(&n, &s)| GpuTensor::from_slice(&ctx, &params(N)[s..s + n]).unwrap())
            .collect();
        let g: Vec<GpuTensor> = lens.iter().map(|&n| GpuTensor::zeros(&ctx, n).unwrap()).collect();
        let group = ParamGroup {
            optimizer: config(label),
            params: p.iter().collect(),
            grads: g.iter().collect(),
            shapes: Vec::new(),
            precision: Default::default(),
        };
        let mut gpu = ParamGroups::new(&ctx, vec![group]).unwrap();
        for k in 1..=STEPS {
            for ((t, &n), &s) in g.iter().zip(&lens).zip(&starts) {
                t.write(&ctx, &grads(N, k)[s..s + n]).unwrap();
            }
            gpu.run(1).unwrap();
        }
        let got: Vec<f32> = p.iter().flat_map(|t| t.read(&ctx).unwrap()).collect();
        let budget = config(label).kernel().step_error_budget;
        let worst = assert_close(label, &got, &want, max_change(&params(N), &want), STEPS, budget);
        eprintln!("{label}: GPU vs optax {worst:.2} ε·scale");
    }
}
