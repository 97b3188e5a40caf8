//! 8-bit blockwise state (bitsandbytes' and torchao's 8-bit optimizers, Dettmers et al.
//! 2022): each block of [`BLOCK`] elements of a state tensor kept as one byte per element —
//! a code into a dynamic quantization map, signed for a state that takes both signs, unsigned
//! for one that does not — and the block's largest magnitude (absmax) as f32. A step
//! dequantizes, updates in f32 (the parameter update reads the f32 values), finds each
//! block's new absmax and quantizes again, in one pass. Defined once here for the CPU; the GPU
//! reads the same maps (bound as a uniform) and shaders/blockwise.wgsl does the same
//! operations, each correctly rounded, so both give the same bytes.

/// Elements per block (bitsandbytes' and torchao's block size for optimizer state).
pub const BLOCK: usize = 256;

/// Tensors with fewer elements keep f32 state (bitsandbytes' `min_8bit_size`).
pub const MIN_QUANTIZED_LEN: usize = 4096;

/// 32-bit words of one block on the GPU: its 256 codes, four to a word, then its absmax.
pub(crate) const BLOCK_WORDS: usize = BLOCK / 4 + 1;

/// The smallest absmax a block is scaled by (torchao's `clip(1e-12)`): a block of zeros
/// quantizes to zeros.
pub const MIN_ABSMAX: f32 = 1e-12;

/// bitsandbytes' create_dynamic_map(signed=True) as f32 bits
/// (scripts/quantization_reference.py, torch 2.15.0+cu132).
const QMAP_SIGNED_BITS: [u32; 256] = [
    0xbf7e3333, 0xbf7a999a, 0xbf770000, 0xbf736666, 0xbf6fcccd, 0xbf6c3333, 0xbf68999a, 0xbf650000, 0xbf616666,
    0xbf5dcccd, 0xbf5a3333, 0xbf56999a, 0xbf530000, 0xbf4f6666, 0xbf4bcccd, 0xbf483333, 0xbf44999a, 0xbf410000,
    0xbf3d6666, 0xbf39cccd, 0xbf363334, 0xbf32999a, 0xbf2f0000, 0xbf2b6666, 0xbf27cccd, 0xbf243334, 0xbf20999a,
    0xbf1d0000, 0xbf196666, 0xbf15cccd, 0xbf123334, 0xbf0e999a, 0xbf0b0000, 0xbf076666, 0xbf03cccc, 0xbf003333,
    0xbef93332, 0xbef20000, 0xbeeacccc, 0xbee3999a, 0xbedc6666, 0xbed53333, 0xbece0000, 0xbec6cccc, 0xbebf999a,
    0xbeb86666, 0xbeb13333, 0xbeaa0000, 0xbea2cccc, 0xbe9b999a, 0xbe946666, 0xbe8d3334, 0xbe860000, 0xbe7d9999,
    0xbe6f3333, 0xbe60cccd, 0xbe526666, 0xbe440000, 0xbe35999a, 0xbe273333, 0xbe18cccd, 0xbe0a6666, 0xbdf80000,
    0xbddb3334, 0xbdc9eb85, 0xbdc428f7, 0xbdbe6667, 0xbdb8a3d7, 0xbdb2e148, 0xbdad1eb8, 0xbda75c2a, 0xbda1999a,
    0xbd9bd70a, 0xbd96147b, 0xbd9051eb, 0xbd8a8f5d, 0xbd84cccd, 0xbd7e147b, 0xbd728f5d, 0xbd670a3d, 0xbd5b851f,
    0xbd500000, 0xbd447ae1, 0xbd38f5c3, 0xbd2d70a3, 0xbd21eb85, 0xbd166667, 0xbd0ae148, 0xbcfeb852, 0xbce7ae15,
    0xbcd0a3d7, 0xbcb9999a, 0xbca28f5d, 0xbc8b851f, 0xbc68f5c3, 0xbc3ae148, 0xbc1f3b64, 0xbc160418, 0xbc0ccccd,
    0xbc039581, 0xbbf4bc6a, 0xbbe24dd3, 0xbbcfdf3b, 0xbbbd70a4, 0xbbab020d, 0xbb989374, 0xbb8624dd, 0xbb676c8a,
    0xbb428f5c, 0xbb1db22d, 0xbaf1a9fc, 0xbaa7ef9d, 0xba7765ff, 0xba59e83e, 0xba3c6a80, 0xba1eecc1, 0xba016f01,
    0xb9c7e283, 0xb98ce705, 0xb923d70b, 0xb8ba1f4b, 0xb88aefb3, 0xb8378034, 0xb7b24206, 0xb70205ff, 0xb65a1a94,
    0xb513a3b7, 0x00000000, 0x3513a3b7, 0x365a1a94, 0x370205ff, 0x37b24206, 0x38378034, 0x388aefb3, 0x38ba1f4b,
    0x3923d70b, 0x398ce705, 0x39c7e283, 0x3a016f01, 0x3a1eecc1, 0x3a3c6a80, 0x3a59e83e, 0x3a7765ff, 0x3aa7ef9d,
    0x3af1a9fc, 0x3b1db22d, 0x3b428f5c, 0x3b676c8a, 0x3b8624dd, 0x3b989374, 0x3bab020d, 0x3bbd70a4, 0x3bcfdf3b,
    0x3be24dd3, 0x3bf4bc6a, 0x3c039581, 0x3c0ccccd, 0x3c160418, 0x3c1f3b64, 0x3c3ae148, 0x3c68f5c3, 0x3c8b851f,
    0x3ca28f5d, 0x3cb9999a, 0x3cd0a3d7, 0x3ce7ae15, 0x3cfeb852, 0x3d0ae148, 0x3d166667, 0x3d21eb85, 0x3d2d70a3,
    0x3d38f5c3, 0x3d447ae1, 0x3d500000, 0x3d5b851f, 0x3d670a3d, 0x3d728f5d, 0x3d7e147b, 0x3d84cccd, 0x3d8a8f5d,
    0x3d9051eb, 0x3d96147b, 0x3d9bd70a, 0x3da1999a, 0x3da75c2a, 0x3dad1eb8, 0x3db2e148, 0x3db8a3d7, 0x3dbe6667,
    0x3dc428f7, 0x3dc9eb85, 0x3ddb3334, 0x3df80000, 0x3e0a6666, 0x3e18cccd, 0x3e273333, 0x3e35999a, 0x3e440000,
    0x3e526666, 0x3e60cccd, 0x3e6f3333, 0x3e7d9999, 0x3e860000, 0x3e8d3334, 0x3e946666, 0x3e9b999a, 0x3ea2cccc,
    0x3eaa0000, 0x3eb13333, 0x3eb86666, 0x3ebf999a, 0x3ec6cccc, 0x3ece0000, 0x3ed53333, 0x3edc6666, 0x3ee3999a,
    0x3eeacccc, 0x3ef20000, 0x3ef93332, 0x3f003333, 0x3f03cccc, 0x3f076666, 0x3f0b0000, 0x3f0e999a, 0x3f123334,
    0x3f15cccd, 0x3f196666, 0x3f1d0000, 0x3f20999a, 0x3f243334, 0x3f27cccd, 0x3f2b6666, 0x3f2f0000, 0x3f32999a,
    0x3f363334, 0x3f39cccd, 0x3f3d6666, 0x3f410000, 0x3f44999a, 0x3f483333, 0x3f4bcccd, 0x3f4f6666, 0x3f530000,
    0x3f56999a, 0x3f5a3333, 0x3f5dcccd, 0x3f616666, 0x3f650000, 0x3f68999a, 0x3f6c3333, 0x3f6fcccd, 0x3f736666,
    0x3f770000, 0x3f7a999a, 0x3f7e3333, 0x3f800000,
];
/// bitsandbytes' create_dynamic_map(signed=False) as f32 bits
/// (scripts/quantization_reference.py, torch 2.15.0+cu132).
const QMAP_UNSIGNED_BITS: [u32; 256] = [
    0x00000000, 0x34ae7baa, 0x35500998, 0x360e9b38, 0x3692ccf6, 0x36de4c51, 0x3714e5d5, 0x3783126e, 0x37e171a0,
    0x381fe868, 0x384f1800, 0x387e479a, 0x3896bb99, 0x38ae5364, 0x38c5eb31, 0x3906594b, 0x394154ca, 0x397c5049,
    0x399ba5e4, 0x39b923a2, 0x39d6a163, 0x39f41f22, 0x3a08ce71, 0x3a178d50, 0x3a264c30, 0x3a350b10, 0x3a43c9ef,
    0x3a5288d0, 0x3a6147af, 0x3a70068e, 0x3a7ec56e, 0x3a958106, 0x3aba5e35, 0x3adf3b64, 0x3b020c4a, 0x3b147ae1,
    0x3b26e978, 0x3b395810, 0x3b4bc6a7, 0x3b5e3540, 0x3b70a3d7, 0x3b818937, 0x3b8ac082, 0x3b93f7cf, 0x3b9d2f1a,
    0x3ba66666, 0x3baf9db2, 0x3bb8d4fd, 0x3bc20c4a, 0x3bcb4395, 0x3bd47ae1, 0x3bddb22e, 0x3be6e978, 0x3bf020c5,
    0x3bf9580f, 0x3c0147ae, 0x3c05e354, 0x3c0a7ef9, 0x3c0f1aa0, 0x3c13b645, 0x3c1851eb, 0x3c1ced92, 0x3c218937,
    0x3c2f5c2a, 0x3c466667, 0x3c5d70a3, 0x3c747ae2, 0x3c85c28f, 0x3c9147af, 0x3c9ccccd, 0x3ca851eb, 0x3cb3d70b,
    0x3cbf5c29, 0x3ccae147, 0x3cd66667, 0x3ce1eb87, 0x3ced70a3, 0x3cf8f5c3, 0x3d023d70, 0x3d080000, 0x3d0dc28f,
    0x3d13851f, 0x3d1947af, 0x3d1f0a3d, 0x3d24cccd, 0x3d2a8f5c, 0x3d3051eb, 0x3d36147b, 0x3d3bd70a, 0x3d41999a,
    0x3d475c28, 0x3d4d1eb8, 0x3d52e147, 0x3d58a3d7, 0x3d5e6667, 0x3d6428f7, 0x3d69eb87, 0x3d6fae15, 0x3d7570a3,
    0x3d7b3333, 0x3d807ae2, 0x3d835c2a, 0x3d863d71, 0x3d891eb8, 0x3d8c0000, 0x3d8ee148, 0x3d91c290, 0x3d94a3d7,
    0x3d97851f, 0x3d9a6667, 0x3d9d47af, 0x3da028f6, 0x3da30a3e, 0x3da5eb85, 0x3da8cccd, 0x3dabae15, 0x3dae8f5c,
    0x3db170a4, 0x3db451eb, 0x3db73333, 0x3dba147b, 0x3dbcf5c3, 0x3dbfd70b, 0x3dc2b852, 0x3dc5999a, 0x3dc87ae2,
    0x3dcb5c29, 0x3dd40000, 0x3de26666, 0x3df0cccd, 0x3dff3333, 0x3e06cccc, 0x3e0e0000, 0x3e153334, 0x3e1c6666,
    0x3e23999a, 0x3e2acccc, 0x3e320000, 0x3e393334, 0x3e406666, 0x3e47999a, 0x3e4ecccc, 0x3e560000, 0x3e5d3334,
    0x3e646666, 0x3e6b999a, 0x3e72cccc, 0x3e7a0000, 0x3e809999, 0x3e843333, 0x3e87cccd, 0x3e8b6666, 0x3e8f0000,
    0x3e92999a, 0x3e963333, 0x3e99cccc, 0x3e9d6666, 0x3ea10000, 0x3ea4999a, 0x3ea83333, 0x3eabcccc, 0x3eaf6666,
    0x3eb30000, 0x3eb6999a, 0x3eba3333, 0x3ebdcccc, 0x3ec16666, 0x3ec50000, 0x3ec8999a, 0x3ecc3333, 0x3ecfcccc,
    0x3ed36666, 0x3ed70000, 0x3eda999a, 0x3ede3333, 0x3ee1cccc, 0x3ee56666, 0x3ee90000, 0x3eec999a, 0x3ef03333,
    0x3ef3cccc, 0x3ef76666, 0x3efb0000, 0x3efe9999, 0x3f01199a, 0x3f02e666, 0x3f04b333, 0x3f068000, 0x3f084ccc,
    0x3f0a199a, 0x3f0be666, 0x3f0db334, 0x3f0f8000, 0x3f114ccd, 0x3f13199a, 0x3f14e666, 0x3f16b334, 0x3f188000,
    0x3f1a4ccd, 0x3f1c199a, 0x3f1de666, 0x3f1fb334, 0x3f218000, 0x3f234ccd, 0x3f25199a, 0x3f26e666, 0x3f28b334,
    0x3f2a8000, 0x3f2c4ccd, 0x3f2e199a, 0x3f2fe666, 0x3f31b334, 0x3f338000, 0x3f354ccd, 0x3f37199a, 0x3f38e666,
    0x3f3ab334, 0x3f3c8000, 0x3f3e4ccd, 0x3f40199a, 0x3f41e666, 0x3f43b334, 0x3f458000, 0x3f474ccc, 0x3f49199a,
    0x3f4ae666, 0x3f4cb334, 0x3f4e8000, 0x3f504ccc, 0x3f52199a, 0x3f53e666, 0x3f55b334, 0x3f578000, 0x3f594ccc,
    0x3f5b199a, 0x3f5ce666, 0x3f5eb334, 0x3f608000, 0x3f624ccc, 0x3f64199a, 0x3f65e666, 0x3f67b334, 0x3f698000,
    0x3f6b4ccc, 0x3f6d199a, 0x3f6ee666, 0x3f70b334, 0x3f728000, 0x3f744ccc, 0x3f76199a, 0x3f77e666, 0x3f79b334,
    0x3f7b8000, 0x3f7d4ccc, 0x3f7f199a, 0x3f800000,
];

const fn from_bits(bits: [u32; 256]) -> [f32; 256] {
    let mut out = [0.0f32; 256];
    let mut i = 0;
    while i < 256 {
        out[i] = f32::from_bits(bits[i]);
        i += 1;
    }
    out
}

/// The signed dynamic map (first moments, momentum): -0.992… to 1, 0 included.
pub const QMAP_SIGNED: [f32; 256] = from_bits(QMAP_SIGNED_BITS);
/// The unsigned dynamic map (second moments): 0 to 1.
pub const QMAP_UNSIGNED: [f32; 256] = from_bits(QMAP_UNSIGNED_BITS);

/// The map of a signed or an unsigned state.
pub fn qmap(signed: bool) -> &'static [f32; 256] {
    if signed { &QMAP_SIGNED } else { &QMAP_UNSIGNED }
}

/// The absmax a block of `values` is scaled by: the largest magnitude (compared as bits, so
/// a NaN is the largest and propagates), at least [`MIN_ABSMAX`].
pub fn block_absmax(values: &[f32]) -> f32 {
    let largest = values.iter().map(|x| x.to_bits() & 0x7fff_ffff).max().unwrap_or(0);
    f32::from_bits(largest.max(MIN_ABSMAX.to_bits()))
}

/// The code of `x` in a block of `absmax` (the paper's nearest code, eq. 4), computed with
/// correctly rounded f32 operations only, so every device gives the same code: the largest
/// code `c` with `x >= map[c] · absmax` (binary search; 0 below the map), then `c + 1` where
/// `x - map[c] · absmax >= (map[c + 1] · absmax - map[c] · absmax) · 0.5`. torchao divides
/// first and compares `x / absmax` with the map, which agrees but where the quotient's
/// rounding crosses a midpoint (scripts/quantization_reference.py).
pub fn quantize(x: f32, absmax: f32, map: &[f32; 256]) -> u8 {
    let mut c = 0usize;
    for step in [128, 64, 32, 16, 8, 4, 2, 1] {
        if x >= map[c + step] * absmax {
            c += step;
        }
    }
    let up = (c + 1).min(255);
    let (low, high) = (map[c] * absmax, map[up] * absmax);
    if x - low >= (high - low) * 0.5 { up as u8 } else { c as u8 }
}

/// The value code `code` stands for in a block of `absmax`.
pub fn dequantize(code: u8, absmax: f32, map: &[f32; 256]) -> f32 {
    map[usize::from(code)] * absmax
}

/// Quantizes one block of new state values in place: returns their absmax and writes each
/// code into `codes`, and each value back as it now stands (dequantized).
pub(crate) fn requantize_block(values: &mut [f32], codes: &mut [u8], map: &[f32; 256]) -> f32 {
    let absmax = block_absmax(values);
    for (x, c) in values.iter_mut().zip(codes.iter_mut()) {
        *c = quantize(*x, absmax, map);
        *x = dequantize(*c, absmax, map);
    }
    absmax
}

/// One block of `value` as stored on the GPU: 64 words of its code, then its absmax.
pub(crate) fn block_of(value: f32, signed: bool) -> Vec<u8> {
    let absmax = block_absmax(&[value]);
    let code = quantize(value, absmax, qmap(signed));
    let mut bytes = vec![code; BLOCK];
    bytes.extend_from_slice(&absmax.to_le_bytes());
    bytes
}

/// The values of `len` elements stored as blocks (the GPU's layout: per block 256 codes,
/// then the absmax).
pub(crate) fn dequantize_blocks(bytes: &[u8], len: usize, signed: bool) -> Vec<f32> {
    let map = qmap(signed);
    let mut out = Vec::with_capacity(len);
    for (b, block) in bytes.chunks_exact(4 * BLOCK_WORDS).enumerate() {
        let absmax = f32::from_le_bytes([block[BLOCK], block[BLOCK + 1], block[BLOCK + 2], block[BLOCK + 3]]);
        let n = BLOCK.min(len - b * BLOCK);
        out.extend(block[..n].iter().map(|&c| dequantize(c, absmax, map)));
    }
    out
}

/// Blocks as stored on the GPU from the codes of `codes.len()` elements and each block's
/// absmax (the codes of a last partial block padded with zeros).
pub(crate) fn join_blocks(codes: &[u8], absmax: &[f32]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(absmax.len() * 4 * BLOCK_WORDS);
    for (chunk, a) in codes.chunks(BLOCK).zip(absmax) {
        bytes.extend_from_slice(chunk);
        bytes.resize(bytes.len() + BLOCK - chunk.len(), 0);
        bytes.extend_from_slice(&a.to_le_bytes());
    }
    bytes
}

/// The codes of `len` elements and each block's absmax, from blocks as stored on the GPU.
pub(crate) fn split_blocks(bytes: &[u8], len: usize) -> (Vec<u8>, Vec<f32>) {
    let mut codes = Vec::with_capacity(len);
    let mut absmax = Vec::with_capacity(len.div_ceil(BLOCK));
    for (b, block) in bytes.chunks_exact(4 * BLOCK_WORDS).enumerate() {
        codes.extend_from_slice(&block[..BLOCK.min(len - b * BLOCK)]);
        absmax.push(f32::from_le_bytes([block[BLOCK], block[BLOCK + 1], block[BLOCK + 2], block[BLOCK + 3]]));
    }
    (codes, absmax)
}

/// Whether a tensor of `len` elements keeps 8-bit state (else f32).
pub(crate) fn is_quantized(len: usize) -> bool {
    len >= MIN_QUANTIZED_LEN
}

/// 8-bit state on the host (the CPU reference): each block's codes and absmax beside the
/// values they stand for, which the update reads and writes as f32.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Blocks {
    codes: Vec<u8>,
    absmax: Vec<f32>,
    signed: bool,
}

impl Blocks {
    /// Every element of `values` quantized (a block each of their value), `values` set to
    /// what the codes stand for.
    pub fn quantize(values: &mut [f32], signed: bool) -> Self {
        let mut blocks =
            Blocks { codes: vec![0; values.len()], absmax: vec![0.0; values.len().div_ceil(BLOCK)], signed };
        blocks.requantize(values, false);
        blocks
    }

    /// After an update: each block of `values` quantized again, `values` set to what the
    /// new codes stand for; on rayon's pool where `parallel` (the same bits).
    pub fn requantize(&mut self, values: &mut [f32], parallel: bool) {
        use rayon::prelude::*;
        let map = qmap(self.signed);
        let one = |((v, c), a): ((&mut [f32], &mut [u8]), &mut f32)| *a = requantize_block(v, c, map);
        if parallel {
            let blocks = values.par_chunks_mut(BLOCK).zip(self.codes.par_chunks_mut(BLOCK));
            blocks.zip(self.absmax.par_iter_mut()).for_each(one);
        } else {
            values.chunks_mut(BLOCK).zip(self.codes.chunks_mut(BLOCK)).zip(self.absmax.iter_mut()).for_each(one);
        }
    }

    /// The blocks as the GPU stores them (and checkpoints read them).
    pub fn to_bytes(&self) -> Vec<u8> {
        join_blocks(&self.codes, &self.absmax)
    }

    /// Blocks from the GPU's layout, and the values they stand for.
    pub fn from_bytes(bytes: &[u8], len: usize, signed: bool) -> (Self, Vec<f32>) {
        let (codes, absmax) = split_blocks(bytes, len);
        (Blocks { codes, absmax, signed }, dequantize_blocks(bytes, len, signed))
    }
}
