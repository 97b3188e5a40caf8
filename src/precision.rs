//! How a step stores the 16-bit parameters it updates — the mixed-precision modes users know
//! — and the counter-based random numbers of stochastic rounding, defined once here for the
//! CPU and once in shaders/formats.wgsl for the GPU, bit for bit alike.
//!
//! The third mode, 16-bit moments beside f32 parameters, is the state's element format
//! (`with_state_format` on the optimizers that keep state).

use crate::error::{Error, Result};
use crate::format::ElementFormat;

/// How a step stores the parameters it updates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Precision {
    /// In place, each updated value stored rounded to the parameters' format, to nearest,
    /// ties to even (exact for f32 parameters). A step smaller than half a unit of the format
    /// leaves a parameter where it is.
    #[default]
    RoundToNearest,
    /// bf16 parameters in place, each updated value stored with stochastic rounding
    /// (torchao's `bf16_stochastic_round`): rounded away from zero with probability equal to
    /// the dropped low 16 bits over 2^16, so a rounded value is unbiased and small steps
    /// accumulate on average. The random bits are a function of `seed`, the step number and
    /// the element's index ([`random_bits`]): the GPU and the CPU reference give the same
    /// bits, and a run is reproducible. Give each parameter group its own seed.
    StochasticRounding {
        /// The generator's key.
        seed: u64,
    },
    /// 16-bit parameters with an f32 master copy kept by the optimizer (state
    /// `master_param`, 4 bytes per parameter more): the step reads and updates the master and
    /// stores the parameter rounded to nearest from it, in the same pass. The master starts
    /// as the parameters' values.
    MasterWeights,
}

/// The f32 master copy of 16-bit parameters ([`Precision::MasterWeights`]): a tensor kept
/// beside the optimizer's state (bound after it on the GPU), saved in checkpoints under this
/// name.
pub(crate) static MASTER: crate::optim::StateSlot =
    crate::optim::StateSlot { role: "master", torch_name: "master_param", signed: true };

/// What a compiled step kernel does when it stores a parameter: [`Precision`] without its
/// seed (which the kernels read from a buffer, so one pipeline serves every seed).
#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq)]
pub(crate) enum ParamStore {
    #[default]
    Nearest,
    Stochastic,
    Master,
}

impl Precision {
    pub(crate) fn store(self) -> ParamStore {
        match self {
            Precision::RoundToNearest => ParamStore::Nearest,
            Precision::StochasticRounding { .. } => ParamStore::Stochastic,
            Precision::MasterWeights => ParamStore::Master,
        }
    }

    /// The name in messages (`"stochastic rounding"`).
    pub fn name(self) -> &'static str {
        match self {
            Precision::RoundToNearest => "rounding to nearest",
            Precision::StochasticRounding { .. } => "stochastic rounding",
            Precision::MasterWeights => "f32 master weights",
        }
    }

    /// `Ok` where a step of `optimizer` may store `format` parameters this way: stochastic
    /// rounding is bf16's (an f16 value's unit depends on its exponent, which truncating the
    /// f32 bits does not follow), master weights are for 16-bit parameters (f32 ones are their
    /// own master), and neither runs where a reduction reads the parameters (f32 only).
    pub(crate) fn check(self, optimizer: &dyn crate::Optimizer, format: ElementFormat) -> Result<()> {
        let refuse = |why: String| Err(Error::Unsupported(format!("{} for {}: {why}", self.name(), optimizer.name())));
        match self {
            Precision::RoundToNearest => Ok(()),
            Precision::StochasticRounding { .. } if format != ElementFormat::BF16 => refuse(format!(
                "the parameters are {}; stochastic rounding stores bf16 ones (for f16 use master weights)",
                format.name()
            )),
            Precision::MasterWeights if !format.is_packed() => {
                refuse("the parameters are f32, their own master copy; master weights keep 16-bit ones".into())
            }
            _ if optimizer.kernel().is_staged() || optimizer.kernel().is_shaped() => {
                refuse("its step reduces over f32 parameters; the element-wise optimizers take 16-bit ones".into())
            }
            _ => Ok(()),
        }
    }
}

/// One round of pcg4d's mixing (see [`random_bits`]).
fn pcg4d_round(v: &mut [u32; 4]) {
    v[0] = v[0].wrapping_add(v[1].wrapping_mul(v[3]));
    v[1] = v[1].wrapping_add(v[2].wrapping_mul(v[0]));
    v[2] = v[2].wrapping_add(v[0].wrapping_mul(v[1]));
    v[3] = v[3].wrapping_add(v[1].wrapping_mul(v[2]));
}

/// The golden-ratio constant that spreads an index's high word over the key's last word.
const GOLDEN: u32 = 0x9e37_79b9;

/// The 16 random bits stochastic rounding draws for element `index` (of the optimizer's
/// parameters, its tensors end to end) at step `step` (counting from 1) under `seed`: the
/// top half of the first word of pcg4d (Jarzynski and Olano, "Hash Functions for GPU
/// Rendering", JCGT 2020) keyed by `(index low word, step, seed low word, seed high word ^
/// index high word · 0x9e3779b9)`. A counter-based generator: no state, any element of any
/// step drawn independently, the same on every device (scripts/low_precision_reference.py
/// computes it from the paper).
pub fn random_bits(seed: u64, step: u32, index: u64) -> u16 {
    let mut v = [index as u32, step, seed as u32, (seed >> 32) as u32 ^ ((index >> 32) as u32).wrapping_mul(GOLDEN)];
    for x in &mut v {
        *x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
    }
    pcg4d_round(&mut v);
    for x in &mut v {
        *x ^= *x >> 16;
    }
    pcg4d_round(&mut v);
    (v[0] >> 16) as u16
}

/// The bf16 bits of `x` rounded stochastically with the 16 random bits `r`: torchao's
/// `_fp32_to_bf16_sr` — the f32 bits truncated to their top half, plus one where `r` is below
/// the dropped half (probability `dropped / 2^16`, away from zero, to ±inf past the largest
/// finite) — with a NaN stored as `0xffff`, as [`ElementFormat::encode`] stores it.
pub fn bf16_stochastic(x: f32, r: u16) -> u16 {
    if x.is_nan() {
        return 0xffff;
    }
    let u = x.to_bits();
    ((u >> 16) + u32::from(u32::from(r) < (u & 0xffff))) as u16
}

/// `x` as a bf16 tensor holds it after stochastic rounding of element `index` at `step`.
pub(crate) fn round_stochastic(seed: u64, step: u32, index: u64, x: f32) -> f32 {
    ElementFormat::BF16.decode(bf16_stochastic(x, random_bits(seed, step, index)))
}
