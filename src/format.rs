//! Element formats: what one element of a tensor is, in memory, in a shader and in a
//! checkpoint. Every size in bytes is a count of elements times [`ElementFormat::bytes`], so
//! a tensor of another format (bf16 parameters, 8-bit blockwise state) is another variant
//! here, not another storage model.

use crate::error::{Error, Result};

/// The format of a tensor's elements.
#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ElementFormat {
    /// IEEE 754 binary32, little-endian: parameters, gradients and state today.
    #[default]
    F32,
}

impl ElementFormat {
    /// Bytes of one element.
    pub const fn bytes(self) -> u64 {
        match self {
            ElementFormat::F32 => 4,
        }
    }

    /// The name used in messages and in a checkpoint's metadata (`"f32"`).
    pub const fn name(self) -> &'static str {
        match self {
            ElementFormat::F32 => "f32",
        }
    }

    /// The WGSL scalar a shader reads one element of this format as, and the vector of four.
    pub(crate) const fn wgsl(self) -> (&'static str, &'static str) {
        match self {
            ElementFormat::F32 => ("f32", "vec4<f32>"),
        }
    }

    /// The safetensors dtype a checkpoint stores it as.
    pub(crate) fn dtype(self) -> safetensors::Dtype {
        match self {
            ElementFormat::F32 => safetensors::Dtype::F32,
        }
    }

    /// The format a checkpoint's dtype holds, if this crate reads it.
    pub(crate) fn of_dtype(dtype: safetensors::Dtype) -> Option<Self> {
        match dtype {
            safetensors::Dtype::F32 => Some(ElementFormat::F32),
            _ => None,
        }
    }

    /// Bytes of `len` elements, checked: `what` names the tensor in the error.
    pub fn size_of(self, what: &'static str, len: usize) -> Result<u64> {
        u64::try_from(len)
            .ok()
            .and_then(|n| n.checked_mul(self.bytes()))
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

    /// The values as f32 (an f32 tensor's own values; other formats are an error until their
    /// conversion exists).
    pub fn to_f32s(&self) -> Result<Vec<f32>> {
        self.format.require("a host tensor", ElementFormat::F32)?;
        Ok(self.bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }
}
