//! Element formats: what one element of a tensor is, in memory, in a shader and in a
//! checkpoint. Every size in bytes is a count of elements times [`ElementFormat::bytes`], so
//! a tensor of another format (bf16 parameters, 8-bit blockwise state) is another variant
//! here, not another storage model.

use crate::error::{Error, Result};

/// The WGSL of the conversions the step kernels store and load with, for a caller's own
/// kernels (a backward pass writing bf16 gradients, a forward reading bf16 parameters):
/// `bf16_encode(x: f32) -> u32`, `bf16_decode(bits: u32) -> f32`, `f16_encode`,
/// `f16_decode` — each bit for bit as [`ElementFormat::encode`] and
/// [`ElementFormat::decode`] — and stochastic rounding's `random_bits` and
/// `bf16_encode_stochastic` ([`crate::precision`]). Put it before the source that uses them.
pub const WGSL: &str = include_str!("../shaders/formats.wgsl");

/// The format of a tensor's elements.
#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ElementFormat {
    /// IEEE 754 binary32, little-endian: parameters, gradients and state.
    #[default]
    F32,
    /// bfloat16 (the top half of a binary32), little-endian, two to a 32-bit word on the GPU:
    /// parameters and gradients. Arithmetic stays f32; a value is stored rounded to nearest,
    /// ties to even, bit for bit as torch's `.to(torch.bfloat16)` ([`encode`](Self::encode)).
    BF16,
    /// IEEE 754 binary16, little-endian, two to a 32-bit word on the GPU: parameters and
    /// gradients, as `BF16`.
    F16,
    /// 8-bit blockwise state ([`crate::quant`], bitsandbytes' and torchao's 8-bit optimizers):
    /// per block of 256 elements a byte per element — a code into the dynamic map of the
    /// state slot's sign — and the block's absmax as f32; a tensor of fewer than 4096
    /// elements keeps f32 state. State only, and a step quantizes whole blocks: values are not
    /// converted one by one (`encode`, `decode` and `round` leave them as f32).
    Blockwise8,
}

impl ElementFormat {
    /// Bytes of one element (of an 8-bit block's code; [`bytes_of`](Self::bytes_of) counts
    /// the blocks' absmax too).
    pub const fn bytes(self) -> u64 {
        match self {
            ElementFormat::F32 => 4,
            ElementFormat::BF16 | ElementFormat::F16 => 2,
            ElementFormat::Blockwise8 => 1,
        }
    }

    /// Bytes of `len` elements as this crate stores them (unchecked; see
    /// [`size_of`](Self::size_of)): for 8-bit blocks, 65 words per block of 256 (the codes,
    /// then the absmax).
    pub const fn bytes_of(self, len: u64) -> u64 {
        match self {
            ElementFormat::Blockwise8 => {
                len.div_ceil(crate::quant::BLOCK as u64) * 4 * crate::quant::BLOCK_WORDS as u64
            }
            f => len * f.bytes(),
        }
    }

    /// Bytes a state tensor of this format keeps for a parameter tensor of `len` elements
    /// (unchecked): [`bytes_of`](Self::bytes_of), except that 8-bit state of a tensor under
    /// [`MIN_QUANTIZED_LEN`](crate::quant::MIN_QUANTIZED_LEN) elements stays f32.
    pub const fn state_bytes_of(self, len: u64) -> u64 {
        match self {
            ElementFormat::Blockwise8 if len < crate::quant::MIN_QUANTIZED_LEN as u64 => 4 * len,
            f => f.bytes_of(len),
        }
    }

    /// Whether two elements share a 32-bit word (the GPU's smallest access): a 16-bit format.
    pub const fn is_packed(self) -> bool {
        self.bytes() == 2
    }

    /// `x` rounded to this format (nearest, ties to even) and widened back: exactly the value
    /// a tensor of this format holds after `x` is stored in it. A NaN stays a NaN (the bits
    /// as [`encode`](Self::encode) gives them).
    pub fn round(self, x: f32) -> f32 {
        match self {
            ElementFormat::F32 | ElementFormat::Blockwise8 => x,
            _ => self.decode(self.encode(x)),
        }
    }

    /// The 16 bits a 16-bit format stores `x` as, the bits torch's `.to(dtype)` gives on the
    /// CPU (scripts/low_precision_reference.py): to nearest, ties to even, overflow to ±inf,
    /// f16 subnormals kept; a NaN as bf16 `0xffff`, as f16 quieted with its sign and top
    /// payload bits (x86's F16C conversion). An f32's own low bits for `F32`.
    pub fn encode(self, x: f32) -> u16 {
        match self {
            ElementFormat::F32 | ElementFormat::Blockwise8 => x.to_bits() as u16,
            ElementFormat::BF16 if x.is_nan() => 0xffff,
            ElementFormat::BF16 => {
                let u = x.to_bits();
                ((u + 0x7fff + ((u >> 16) & 1)) >> 16) as u16
            }
            ElementFormat::F16 => half::f16::from_f32(x).to_bits(),
        }
    }

    /// The f32 value of a 16-bit format's bits (exact).
    pub fn decode(self, bits: u16) -> f32 {
        match self {
            ElementFormat::F32 | ElementFormat::Blockwise8 => f32::from_bits(u32::from(bits)),
            ElementFormat::BF16 => f32::from_bits(u32::from(bits) << 16),
            ElementFormat::F16 => half::f16::from_bits(bits).to_f32(),
        }
    }

    /// `values` stored in this format: little-endian bytes, `len * bytes()` of them.
    /// (8-bit blocks: the f32 values, as a tensor of fewer than 4096 elements keeps them.)
    pub fn encode_all(self, values: &[f32]) -> Vec<u8> {
        match self {
            ElementFormat::F32 | ElementFormat::Blockwise8 => bytemuck::cast_slice(values).to_vec(),
            _ => values.iter().flat_map(|&x| self.encode(x).to_le_bytes()).collect(),
        }
    }

    /// The values of little-endian `bytes` of this format (whole elements).
    pub fn decode_all(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            ElementFormat::F32 | ElementFormat::Blockwise8 => {
                bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
            }
            _ => bytes.chunks_exact(2).map(|b| self.decode(u16::from_le_bytes([b[0], b[1]]))).collect(),
        }
    }

    /// The name used in messages and in a checkpoint's metadata (`"f32"`).
    pub const fn name(self) -> &'static str {
        match self {
            ElementFormat::F32 => "f32",
            ElementFormat::BF16 => "bf16",
            ElementFormat::F16 => "f16",
            ElementFormat::Blockwise8 => "8-bit blockwise",
        }
    }

    /// The safetensors dtype a checkpoint stores it as.
    pub(crate) fn dtype(self) -> safetensors::Dtype {
        match self {
            ElementFormat::F32 => safetensors::Dtype::F32,
            ElementFormat::BF16 => safetensors::Dtype::BF16,
            ElementFormat::F16 => safetensors::Dtype::F16,
            ElementFormat::Blockwise8 => safetensors::Dtype::U8,
        }
    }

    /// The format a checkpoint's dtype holds, if this crate reads it.
    pub(crate) fn of_dtype(dtype: safetensors::Dtype) -> Option<Self> {
        match dtype {
            safetensors::Dtype::F32 => Some(ElementFormat::F32),
            safetensors::Dtype::BF16 => Some(ElementFormat::BF16),
            safetensors::Dtype::F16 => Some(ElementFormat::F16),
            _ => None,
        }
    }

    /// Bytes of `len` elements, checked: `what` names the tensor in the error.
    pub fn size_of(self, what: &'static str, len: usize) -> Result<u64> {
        u64::try_from(len)
            .ok()
            .filter(|&n| n < u64::MAX / 8)
            .map(|n| self.bytes_of(n))
            .ok_or_else(|| Error::OverLimit(format!("{what}: {len} {} elements exceed a u64 byte count", self.name())))
    }

    /// Elements of this format in `bytes` (rounded down).
    pub const fn elements_in(self, bytes: u64) -> u64 {
        bytes / self.bytes()
    }

    /// `Err(Unsupported)` unless this is `expected`: where a kernel or a host API reads one
    /// format only.
    pub(crate) fn require(self, what: &str, expected: ElementFormat) -> Result<()> {
        if self == expected {
            Ok(())
        } else {
            Err(Error::Unsupported(format!(
                "{what} holds {} elements; this reads {} only",
                self.name(),
                expected.name()
            )))
        }
    }
}

/// Host data in an element format: the bytes of a state tensor as a checkpoint keeps them.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// The format of the elements.
    pub format: ElementFormat,
    /// The elements, little-endian, `len * format.bytes()` bytes.
    pub bytes: Vec<u8>,
}

impl HostTensor {
    /// f32 values.
    pub fn from_f32s(data: &[f32]) -> Self {
        HostTensor { format: ElementFormat::F32, bytes: bytemuck::cast_slice(data).to_vec() }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        (self.bytes.len() as u64 / self.format.bytes()) as usize
    }

    /// Whether it holds no element.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// `data` stored in `format` (rounded to nearest even).
    pub fn from_f32s_as(format: ElementFormat, data: &[f32]) -> Self {
        HostTensor { format, bytes: format.encode_all(data) }
    }

    /// The values as f32 (exact: every format here widens to f32 without rounding).
    pub fn to_f32s(&self) -> Result<Vec<f32>> {
        Ok(self.format.decode_all(&self.bytes))
    }
}
