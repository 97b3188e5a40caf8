//! Tensors on the GPU, stored as consecutive bound sub-ranges ("segments") that may live in
//! several physical buffers: the one storage model the kernels see, whether the memory is
//! this crate's or the caller's. A tensor knows its [`ElementFormat`]; every byte offset and
//! size is elements times its bytes per element.

use ndarray::{Array1, ArrayView1};

use crate::error::{Error, Result};
pub use crate::format::ElementFormat;
use crate::gpu::GpuContext;

/// One bound sub-range of a tensor: `len` elements of `format` at byte `offset` of `buffer`.
#[derive(Clone, Debug)]
pub struct Segment {
    /// The physical buffer.
    pub buffer: wgpu::Buffer,
    /// Byte offset of the first element (a multiple of the storage offset alignment).
    pub offset: u64,
    /// Number of elements.
    pub len: usize,
    /// The format of its elements.
    pub format: ElementFormat,
}

impl Segment {
    /// Bytes of its elements (a bound sub-range's size fits a binding, so this cannot wrap).
    pub(crate) fn bytes(&self) -> u64 {
        self.format.bytes_of(self.len as u64)
    }

    /// Bytes a binding or a copy of it covers: its elements' bytes rounded up to the 4 of a
    /// word. A 16-bit sub-range of odd length ends in half a word, and the other half is
    /// padding it owns (its tensor's buffer's, never another element's: see
    /// [`GpuTensor::slice`]).
    pub(crate) fn bound_bytes(&self) -> u64 {
        self.bytes().next_multiple_of(4)
    }

    /// This sub-range as a binding, for a bind group of the caller's own kernels.
    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset,
            size: wgpu::BufferSize::new(self.bound_bytes()),
        })
    }
}

/// A flat tensor on the GPU, of one [`ElementFormat`] (f32 for every constructor that takes
/// f32 data).
///
/// Its elements are split into sub-ranges of [`Tuning::segment_bytes`](crate::Tuning) each
/// (the last shorter); the kernels bind one sub-range at a time, so a tensor may be larger
/// than one binding or one buffer. Tensors this crate allocates put at most
/// [`Tuning::buffer_bytes`](crate::Tuning) into one physical buffer.
#[derive(Clone, Debug)]
pub struct GpuTensor {
    len: usize,
    format: ElementFormat,
    segments: Vec<Segment>,
}

/// `Err(ForeignDevice)` unless `buffer` belongs to `ctx`'s device. wgpu validates a buffer's
/// device when a command uses it, not when a bind group does: an (unsubmitted) state
/// transition asks it now. A buffer of another wgpu *instance* makes wgpu 30 panic on the
/// unknown id instead; that is caught and reported the same way — unless its id happens to be
/// a live one of this instance, which no check can tell apart (contexts this crate creates
/// share one process-wide instance, so their buffers never collide).
pub(crate) fn check_device(ctx: &GpuContext, buffer: &wgpu::Buffer, what: &'static str) -> Result<()> {
    let probe = || {
        ctx.scoped("checking a buffer's device", || {
            let mut probe = ctx.device().create_command_encoder(&Default::default());
            probe.transition_resources(
                std::iter::once(wgpu::BufferTransition { buffer, state: wgpu::BufferUses::STORAGE_READ_WRITE }),
                std::iter::empty(),
            );
            drop(probe.finish());
        })
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(probe)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e @ Error::DeviceLost { .. })) => Err(e),
        Ok(Err(_)) | Err(_) => Err(Error::ForeignDevice { what }),
    }
}

/// The most sub-ranges one tensor may have (2^20 sub-ranges of 128 MiB are 128 TiB): a
/// bound on the host's bookkeeping before anything is allocated.
const MAX_SEGMENTS: usize = 1 << 20;

/// The usages of every buffer this crate allocates for a tensor.
pub const TENSOR_USAGES: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

impl GpuTensor {
    /// A tensor of `len` f32 zeros in buffers of this crate's own.
    pub fn zeros(ctx: &GpuContext, len: usize) -> Result<Self> {
        Self::zeros_of(ctx, ElementFormat::F32, len)
    }

    /// A tensor of `len` zero elements of `format`.
    pub fn zeros_of(ctx: &GpuContext, format: ElementFormat, len: usize) -> Result<Self> {
        Self::zeros_with(ctx, format, len, ctx.tuning().segment_len())
    }

    /// Zeros in sub-ranges of `seg_len` elements (at most the tuning's).
    pub(crate) fn zeros_with(ctx: &GpuContext, format: ElementFormat, len: usize, seg_len: usize) -> Result<Self> {
        if len == 0 {
            return Err(Error::Empty { what: "tensor" });
        }
        let bytes = format.size_of("tensor", len)?;
        let segments = len.div_ceil(seg_len.max(1));
        if segments > MAX_SEGMENTS {
            return Err(Error::OverLimit(format!(
                "a tensor of {len} elements ({bytes} bytes) would be {segments} sub-ranges, more than {MAX_SEGMENTS}: \
                 no device holds it; split the model or raise Tuning::segment_bytes"
            )));
        }
        ctx.check_allocation("allocating a tensor", bytes)?;
        Self::zeros_in(ctx, format, &segment_lens(len, seg_len))
    }

    /// Zeros of `format` laid out in sub-ranges of exactly `lens` elements, so that it can be
    /// bound beside a tensor of that layout. Consecutive sub-ranges share a physical buffer up
    /// to [`Tuning::buffer_bytes`](crate::Tuning), each starting at an aligned offset.
    pub(crate) fn zeros_in(ctx: &GpuContext, format: ElementFormat, lens: &[usize]) -> Result<Self> {
        Self::zeros_packed(ctx, format, &[], lens, &[])
    }

    /// Zeros of `format` laid out like `like`, sub-range for sub-range, sharing a physical
    /// buffer only where `like`'s sub-ranges share one: the state of tensors in separate
    /// buffers is in separate buffers too, so that their dispatches write no common buffer
    /// (wgpu puts a barrier between two dispatches that write one buffer).
    pub(crate) fn zeros_like(ctx: &GpuContext, format: ElementFormat, like: &GpuTensor) -> Result<Self> {
        let runs = like.buffer_runs();
        let apart: Vec<bool> = (0..runs.len()).map(|i| i > 0 && runs[i] != runs[i - 1]).collect();
        Self::zeros_packed(ctx, format, &[], &like.segment_lens(), &apart)
    }

    /// For each sub-range, the run of consecutive sub-ranges in one physical buffer it is in
    /// (0, 0, 1, …): what must not share a written buffer with the others to step without
    /// barriers between them.
    pub(crate) fn buffer_runs(&self) -> Vec<usize> {
        let s = &self.segments;
        (0..s.len())
            .scan(0, |run, i| {
                *run += usize::from(i > 0 && s[i].buffer != s[i - 1].buffer);
                Some(*run)
            })
            .collect()
    }

    /// Zeros in sub-ranges of `lens`, packed into physical buffers of at most
    /// [`Tuning::buffer_bytes`](crate::Tuning), a new one wherever `apart[i]` says so; sub-range
    /// `i` in `each[i]` where given (8-bit state whose small tensors keep f32), else `format`.
    fn zeros_packed(
        ctx: &GpuContext,
        format: ElementFormat,
        each: &[ElementFormat],
        lens: &[usize],
        apart: &[bool],
    ) -> Result<Self> {
        let format_of = |i: usize| each.get(i).copied().unwrap_or(format);
        let align = u64::from(ctx.limits().min_storage_buffer_offset_alignment).max(16);
        let cap = ctx.tuning().buffer_bytes;
        // Pack sub-ranges into buffers.
        // (buffer size, [(offset, len, format)]).
        type Part = (u64, usize, ElementFormat);
        let mut plan: Vec<(u64, Vec<Part>)> = Vec::new();
        for (i, &l) in lens.iter().enumerate() {
            let bytes = format_of(i).size_of("tensor", l)?;
            let together = !apart.get(i).copied().unwrap_or(false);
            match plan.last_mut() {
                Some((size, parts)) if together && size.next_multiple_of(align) + bytes <= cap => {
                    let at = size.next_multiple_of(align);
                    parts.push((at, l, format_of(i)));
                    *size = at + bytes;
                }
                _ => plan.push((bytes, vec![(0, l, format_of(i))])),
            }
        }
        let total = plan.iter().try_fold(0u64, |t, (size, _)| t.checked_add(size.next_multiple_of(16)));
        let total =
            total.ok_or_else(|| Error::OverLimit(format!("a tensor of {lens:?} elements exceeds u64 bytes")))?;
        ctx.check_allocation("allocating a tensor", total)?;
        let mut segments = Vec::with_capacity(lens.len());
        ctx.scoped("allocating a tensor", || {
            for (size, parts) in plan {
                // Padded to 16 bytes so the last sub-range can also be viewed as whole vec4s.
                let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
                    label: Some("wgpu-optim tensor"),
                    size: size.next_multiple_of(16),
                    usage: TENSOR_USAGES,
                    mapped_at_creation: false,
                });
                for (offset, len, format) in parts {
                    segments.push(Segment { buffer: buffer.clone(), offset, len, format });
                }
            }
        })?;
        Ok(GpuTensor { len: lens.iter().sum(), format, segments })
    }

    /// The tensors one after another, as one tensor: no copy, the sub-ranges of each in
    /// order. An optimizer bound to a concatenation updates every part in one step — many
    /// separate buffers, one dispatch per sub-range (parts that lie end to end in one buffer
    /// step as one).
    /// The parts must share one element format.
    pub fn concat(parts: &[&GpuTensor]) -> Result<Self> {
        let segments: Vec<Segment> = parts.iter().flat_map(|t| t.segments.iter().cloned()).collect();
        let format = match parts.first() {
            Some(first) if !segments.is_empty() => first.format,
            _ => return Err(Error::Empty { what: "concat" }),
        };
        if let Some(other) = parts.iter().find(|t| t.format != format) {
            return Err(Error::Unsupported(format!(
                "concatenating {} and {} tensors: the parts of one tensor share one element format",
                format.name(),
                other.format.name()
            )));
        }
        Ok(GpuTensor { len: parts.iter().map(|t| t.len).sum(), format, segments })
    }

    /// The tensors this one concatenates, where sub-range `i` belongs to tensor
    /// `segment_tensor[i]` (consecutive sub-ranges per tensor): no copy.
    pub(crate) fn split(&self, segment_tensor: &[u32]) -> Vec<GpuTensor> {
        let mut parts: Vec<GpuTensor> = Vec::new();
        for (s, &t) in self.segments.iter().zip(segment_tensor) {
            match parts.get_mut(t as usize) {
                Some(part) => {
                    part.len += s.len;
                    part.segments.push(s.clone());
                }
                None => parts.push(GpuTensor { len: s.len, format: self.format, segments: vec![s.clone()] }),
            }
        }
        parts
    }

    /// The elements `[offset, offset + len)` as a tensor of their own: no copy. Each piece
    /// must start at a byte offset aligned to the device's `min_storage_buffer_offset_alignment`
    /// (64 f32 on most devices) within its buffer, so that it can be bound.
    ///
    /// This is what a data-parallel rank needs for ZeRO-style sharding: an optimizer bound
    /// to `params.slice(start, len)` and `grads.slice(start, len)` keeps state for that shard
    /// only and updates it alone; the collective library then all-gathers the parameters.
    pub fn slice(&self, ctx: &GpuContext, offset: usize, len: usize) -> Result<Self> {
        const WHAT: &str = "slice";
        let end =
            offset.checked_add(len).filter(|&e| e <= self.len && len > 0).ok_or_else(|| Error::BadBufferRange {
                what: WHAT,
                message: format!("[{offset}, {offset} + {len}) is not a non-empty range of a tensor of {}", self.len),
            })?;
        let align = u64::from(ctx.limits().min_storage_buffer_offset_alignment);
        let mut segments = Vec::new();
        let mut start = 0;
        for s in &self.segments {
            let (lo, hi) = (offset.max(start), end.min(start + s.len));
            if lo < hi {
                let byte = s.offset + (lo - start) as u64 * self.format.bytes();
                if !byte.is_multiple_of(align) {
                    return Err(Error::BadBufferRange {
                        what: WHAT,
                        message: format!(
                            "element {lo} sits at byte {byte} of its buffer, not a multiple of the storage offset \
                             alignment {align}; start slices at multiples of {} elements",
                            self.format.elements_in(align)
                        ),
                    });
                }
                // A 16-bit piece of odd length ends in half a word: only where its sub-range
                // ends too is the other half padding, not a neighbour's element.
                if self.format.is_packed() && (hi - lo) % 2 == 1 && hi != start + s.len {
                    return Err(Error::BadBufferRange {
                        what: WHAT,
                        message: format!(
                            "[{lo}, {hi}) is an odd number of {} elements ending inside a sub-range: its last \
                             element would share a word with element {hi}; slice an even number of elements, or \
                             up to the tensor's end",
                            self.format.name()
                        ),
                    });
                }
                segments.push(Segment { buffer: s.buffer.clone(), offset: byte, len: hi - lo, format: self.format });
            }
            start += s.len;
        }
        Ok(GpuTensor { len, format: self.format, segments })
    }

    /// Zeroed storage for a model's tensors of `lens` elements: the whole arena, and a view
    /// of each tensor, each starting at a multiple of the storage offset alignment (a gap of
    /// fewer than 64 zeros between tensors on most devices). Bind an optimizer to the whole
    /// arena — one dispatch per sub-range per step, whatever the tensor count — and give
    /// your kernels the views. Where the gradients are zero the gaps stay zero under every
    /// optimizer of this crate, so they cost a little memory traffic and change nothing.
    /// Elements are f32 ([`arena_of`](Self::arena_of) for another format).
    pub fn arena(ctx: &GpuContext, lens: &[usize]) -> Result<(Self, Vec<Self>)> {
        Self::arena_of(ctx, ElementFormat::F32, lens)
    }

    /// An [`arena`](Self::arena) of `format` elements (a 16-bit tensor's views: even lengths).
    pub fn arena_of(ctx: &GpuContext, format: ElementFormat, lens: &[usize]) -> Result<(Self, Vec<Self>)> {
        let starts = Self::arena_starts_of(ctx, format, lens);
        let total = starts.last().zip(lens.last()).map_or(0, |(s, n)| s + n);
        let whole = Self::zeros_of(ctx, format, total)?;
        let views = lens.iter().zip(&starts).map(|(&n, &start)| whole.slice(ctx, start, n)).collect::<Result<_>>()?;
        Ok((whole, views))
    }

    /// Where each tensor of [`arena`](Self::arena) starts in it — and so where its state
    /// starts in an optimizer bound to the whole arena: each start a multiple of the storage
    /// offset alignment (f32 elements).
    pub fn arena_starts(ctx: &GpuContext, lens: &[usize]) -> Vec<usize> {
        Self::arena_starts_of(ctx, ElementFormat::F32, lens)
    }

    /// Where each tensor of an [`arena_of`](Self::arena_of) `format` starts in it.
    pub fn arena_starts_of(ctx: &GpuContext, format: ElementFormat, lens: &[usize]) -> Vec<usize> {
        let align = format.elements_in(u64::from(ctx.limits().min_storage_buffer_offset_alignment));
        let align = align.max(2) as usize;
        lens.iter().scan(0, |at, &n| Some(std::mem::replace(at, *at + n.next_multiple_of(align)))).collect()
    }

    /// A tensor of `len` copies of the f32 `value`.
    pub fn filled(ctx: &GpuContext, len: usize, value: f32) -> Result<Self> {
        Self::zeros(ctx, len)?.fill(ctx, value)
    }

    /// Copies of `value` in `format` laid out like `like` ([`zeros_like`](Self::zeros_like)).
    pub(crate) fn filled_like(ctx: &GpuContext, format: ElementFormat, like: &GpuTensor, value: f32) -> Result<Self> {
        Self::zeros_like(ctx, format, like)?.fill(ctx, value)
    }

    fn fill(self, ctx: &GpuContext, value: f32) -> Result<Self> {
        let t = self;
        if value.to_bits() == 0 {
            return Ok(t); // allocated zeroed
        }
        // Written from one reusable block of at most 1 MiB of the value in the tensor's
        // format, an even number of elements (whole words), not a host copy of the tensor.
        let block = t.format.encode_all(&vec![value; t.len.min(1 << 18).next_multiple_of(2)]);
        let per = t.format.bytes() as usize;
        ctx.scoped("filling a tensor", || {
            for s in &t.segments {
                let mut done = 0;
                while done < s.len {
                    let n = (block.len() / per).min(s.len - done);
                    let at = s.offset + done as u64 * s.format.bytes();
                    // Whole words: an odd last element's padding half gets a copy too.
                    let bytes = ((n * per) as u64).next_multiple_of(4) as usize;
                    ctx.queue().write_buffer(&s.buffer, at, &block[..bytes]);
                    done += n;
                }
            }
        })?;
        Ok(t)
    }

    /// A tensor holding a copy of `data`.
    pub fn from_slice(ctx: &GpuContext, data: &[f32]) -> Result<Self> {
        let t = Self::zeros(ctx, data.len())?;
        t.write(ctx, data)?;
        Ok(t)
    }

    /// A view of `len` f32 values at byte `offset` of a buffer the caller owns. Nothing is
    /// copied: steps read and write the caller's memory. The buffer needs `STORAGE` usage
    /// (plus `COPY_SRC`/`COPY_DST` for [`read`](Self::read)/[`write`](Self::write)), and
    /// `offset` must be a multiple of the device's `min_storage_buffer_offset_alignment`.
    pub fn from_buffer(ctx: &GpuContext, buffer: &wgpu::Buffer, offset: u64, len: usize) -> Result<Self> {
        Self::from_buffer_of(ctx, ElementFormat::F32, buffer, offset, len)
    }

    /// A view of `len` elements of `format` at byte `offset` of a buffer the caller owns
    /// (see [`from_buffer`](Self::from_buffer)).
    pub fn from_buffer_of(
        ctx: &GpuContext,
        format: ElementFormat,
        buffer: &wgpu::Buffer,
        offset: u64,
        len: usize,
    ) -> Result<Self> {
        const WHAT: &str = "from_buffer";
        if len == 0 {
            return Err(Error::Empty { what: WHAT });
        }
        if !buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
            return Err(Error::MissingUsage { what: WHAT, missing: wgpu::BufferUsages::STORAGE });
        }
        let align = u64::from(ctx.limits().min_storage_buffer_offset_alignment);
        if !offset.is_multiple_of(align) {
            return Err(Error::BadBufferRange {
                what: WHAT,
                message: format!("offset {offset} is not a multiple of the storage offset alignment {align}"),
            });
        }
        let end = format.size_of(WHAT, len)?.checked_add(offset).filter(|&end| end <= buffer.size());
        let Some(_) = end else {
            return Err(Error::BadBufferRange {
                what: WHAT,
                message: format!(
                    "{len} {} values from byte {offset} end past the buffer's {} bytes",
                    format.name(),
                    buffer.size()
                ),
            });
        };
        if format.is_packed() && len % 2 == 1 {
            return Err(Error::BadBufferRange {
                what: WHAT,
                message: format!(
                    "{len} {} elements: an odd number, whose last would share a 32-bit word with the byte after; \
                     view an even number of elements (a tensor this crate allocates may be of any length)",
                    format.name()
                ),
            });
        }
        check_device(ctx, buffer, WHAT)?;
        let seg_len = ctx.tuning().segment_len();
        let seg_bytes = seg_len as u64 * format.bytes();
        let segments = segment_lens(len, seg_len)
            .into_iter()
            .enumerate()
            .map(|(i, l)| Segment { buffer: buffer.clone(), offset: offset + i as u64 * seg_bytes, len: l, format })
            .collect();
        Ok(GpuTensor { len, format, segments })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The format of the elements.
    pub fn format(&self) -> ElementFormat {
        self.format
    }

    /// Always false: a tensor has at least one element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bound sub-ranges, in order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Lengths of the sub-ranges, in order.
    pub fn segment_lens(&self) -> Vec<usize> {
        self.segments.iter().map(|s| s.len).collect()
    }

    /// Overwrites the tensor with `data`, stored in its format (a 16-bit one rounds to
    /// nearest, ties to even, as [`ElementFormat::encode`]); through the queue, taking effect
    /// in submission order.
    pub fn write(&self, ctx: &GpuContext, data: &[f32]) -> Result<()> {
        if data.len() != self.len {
            return Err(Error::LengthMismatch { what: "tensor write", expected: self.len, actual: data.len() });
        }
        match self.format {
            ElementFormat::F32 => self.write_bytes(ctx, bytemuck::cast_slice(data)),
            f => self.write_bytes(ctx, &f.encode_all(data)),
        }
    }

    /// A tensor of `format` holding `data` stored in it (rounded as [`write`](Self::write)).
    pub fn from_f32s_as(ctx: &GpuContext, format: ElementFormat, data: &[f32]) -> Result<Self> {
        let t = Self::zeros_of(ctx, format, data.len())?;
        t.write(ctx, data)?;
        Ok(t)
    }

    /// Overwrites the tensor with `bytes`, its elements in its own format.
    pub fn write_bytes(&self, ctx: &GpuContext, bytes: &[u8]) -> Result<()> {
        if self.segments.iter().any(|s| !s.buffer.usage().contains(wgpu::BufferUsages::COPY_DST)) {
            return Err(Error::MissingUsage { what: "tensor write", missing: wgpu::BufferUsages::COPY_DST });
        }
        let expected: u64 = self.segments.iter().map(Segment::bytes).sum();
        if bytes.len() as u64 != expected {
            return Err(Error::LengthMismatch {
                what: "tensor write (bytes)",
                expected: expected as usize,
                actual: bytes.len(),
            });
        }
        ctx.scoped("writing a tensor", || {
            let mut start = 0;
            for s in &self.segments {
                let n = s.bytes() as usize;
                if s.bound_bytes() == s.bytes() {
                    ctx.queue().write_buffer(&s.buffer, s.offset, &bytes[start..start + n]);
                } else {
                    // Whole words only: the last element's word with its padding half zeroed.
                    let mut padded = bytes[start..start + n].to_vec();
                    padded.resize(s.bound_bytes() as usize, 0);
                    ctx.queue().write_buffer(&s.buffer, s.offset, &padded);
                }
                start += n;
            }
        })
    }

    /// Copies the tensor back to the host as f32 values (exact: every format widens to f32
    /// without rounding; blocks until the GPU is done).
    /// 8-bit blockwise state is read through its optimizer (`read_state`), which knows the
    /// map of its sign.
    pub fn read(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        if self.format == ElementFormat::Blockwise8 {
            return Err(Error::Unsupported(
                "reading 8-bit blockwise state as f32: read it with the optimizer's read_state, which knows its map"
                    .into(),
            ));
        }
        Ok(self.format.decode_all(&self.read_bytes(ctx)?))
    }

    /// The values of 8-bit blockwise state of a slot of sign `signed`: each sub-range's
    /// blocks dequantized, or its f32 values where its tensor keeps f32 state.
    pub(crate) fn read_blockwise(&self, ctx: &GpuContext, signed: bool) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(self.len);
        for s in &self.segments {
            let mut bytes = Vec::new();
            read_segment(ctx, s, &mut bytes)?;
            match s.format {
                ElementFormat::Blockwise8 => out.extend(crate::quant::dequantize_blocks(&bytes, s.len, signed)),
                f => out.extend(f.decode_all(&bytes)),
            }
        }
        Ok(out)
    }

    /// 8-bit blockwise state laid out like `like`: sub-range `i` quantized where
    /// `quantized[i]` (its tensor has at least 4096 elements), else f32; every element
    /// `value` (a block of it: its absmax and codes).
    pub(crate) fn blockwise_like(
        ctx: &GpuContext,
        like: &GpuTensor,
        quantized: &[bool],
        value: f32,
        signed: bool,
    ) -> Result<Self> {
        let formats: Vec<ElementFormat> =
            quantized.iter().map(|&q| if q { ElementFormat::Blockwise8 } else { ElementFormat::F32 }).collect();
        let runs = like.buffer_runs();
        let apart: Vec<bool> = (0..runs.len()).map(|i| i > 0 && runs[i] != runs[i - 1]).collect();
        let t = Self::zeros_packed(ctx, ElementFormat::Blockwise8, &formats, &like.segment_lens(), &apart)?;
        let block = crate::quant::block_of(value, signed);
        ctx.scoped("filling 8-bit state", || {
            for s in &t.segments {
                let bytes = match s.format {
                    ElementFormat::Blockwise8 => block.repeat(s.len.div_ceil(crate::quant::BLOCK)),
                    _ if value.to_bits() == 0 => continue,
                    _ => ElementFormat::F32.encode_all(&vec![value; s.len]),
                };
                ctx.queue().write_buffer(&s.buffer, s.offset, &bytes);
            }
        })?;
        Ok(t)
    }

    /// The same elements in sub-ranges that start on a block of `block` elements of the
    /// tensor: each run of sub-ranges end to end in one buffer cut again into pieces of a
    /// multiple of `block` elements (at most `max_len`), so that a block never spans two
    /// dispatches (8-bit blockwise state). `Err` where a block would span two buffers.
    pub(crate) fn in_blocks(&self, block: usize, max_len: usize) -> Result<Self> {
        let [merged] = merge_contiguous([self], usize::MAX);
        let piece = (max_len / block).max(1) * block;
        let per = self.format.bytes();
        let mut segments = Vec::new();
        let last = merged.segments.len().saturating_sub(1);
        for (k, s) in merged.segments.iter().enumerate() {
            if k < last && !s.len.is_multiple_of(block) {
                return Err(Error::Unsupported(format!(
                    "8-bit state: a tensor of {} elements lies in {} buffers, and a block of {block} elements would \
                     span two of them (after {} elements); lay the tensor in one buffer (Tuning::buffer_bytes)",
                    self.len,
                    merged.segments.len(),
                    s.len
                )));
            }
            for (j, len) in segment_lens(s.len, piece).into_iter().enumerate() {
                let offset = s.offset + (j * piece) as u64 * per;
                segments.push(Segment { buffer: s.buffer.clone(), offset, len, format: s.format });
            }
        }
        Ok(GpuTensor { len: self.len, format: self.format, segments })
    }

    /// Copies the tensor's elements back in its own format (blocks until the GPU is done).
    pub fn read_bytes(&self, ctx: &GpuContext) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.format.size_of("tensor read", self.len)? as usize);
        for s in &self.segments {
            read_segment(ctx, s, &mut out)?;
        }
        Ok(out)
    }

    /// Overwrites the tensor with host data of its format (what a checkpoint restores).
    pub(crate) fn write_host(&self, ctx: &GpuContext, data: &crate::format::HostTensor) -> Result<()> {
        // 8-bit state whose every tensor keeps f32 (too small for blocks) reads f32 data.
        let all_f32 = self.segments.iter().all(|s| s.format == ElementFormat::F32);
        if data.format != self.format && !(self.format == ElementFormat::Blockwise8 && all_f32) {
            return Err(Error::Unsupported(format!(
                "writing {} data into a {} tensor",
                data.format.name(),
                self.format.name()
            )));
        }
        self.write_bytes(ctx, &data.bytes)
    }

    /// The tensor as host data in its own format (what a checkpoint stores).
    pub(crate) fn read_host(&self, ctx: &GpuContext) -> Result<crate::format::HostTensor> {
        Ok(crate::format::HostTensor { format: self.format, bytes: self.read_bytes(ctx)? })
    }

    /// [`read`](Self::read) as an ndarray.
    pub fn to_array(&self, ctx: &GpuContext) -> Result<Array1<f32>> {
        self.read(ctx).map(Array1::from)
    }
}

/// One tensor an optimizer binds, for [`check_disjoint`]: a name for messages, the tensor,
/// and whether the step writes it (a parameter) or only reads it (a gradient).
pub(crate) type BoundTensor<'a> = (String, &'a GpuTensor, bool);

/// Refuses bindings where a step would race with itself: parameters that overlap each other
/// (a tensor twice in a group, or in two groups) or a gradient. Gradients may share memory
/// with each other (both only read). Sorted sweep, O(n log n) in the sub-ranges.
pub(crate) fn check_disjoint<'a>(bound: &'a [BoundTensor<'a>]) -> Result<()> {
    // (buffer, start, end, writes, name) of every sub-range.
    let mut ranges: Vec<(&'a wgpu::Buffer, u64, u64, bool, &'a str)> = Vec::new();
    for (name, t, writes) in bound {
        for s in &t.segments {
            ranges.push((&s.buffer, s.offset, s.offset + s.bytes(), *writes, name.as_str()));
        }
    }
    ranges.sort_by(|a, b| a.0.cmp(b.0).then(a.1.cmp(&b.1)));
    // In the current buffer: the furthest end a parameter reached, and any range, with names.
    type Reach<'a> = Option<(&'a wgpu::Buffer, u64, &'a str)>;
    let (mut written, mut any): (Reach<'a>, Reach<'a>) = (None, None);
    for &(buffer, start, end, writes, name) in &ranges {
        let seen = if writes { any } else { written };
        if let Some((b, reach, other)) = seen
            && b == buffer
            && start < reach
        {
            return Err(Error::Aliased {
                first: other.to_string(),
                second: name.to_string(),
                start,
                end: reach.min(end),
            });
        }
        let extend = |seen: Reach<'a>| -> Reach<'a> {
            match seen {
                Some((b, reach, _)) if b == buffer && reach >= end => seen,
                _ => Some((buffer, end, name)),
            }
        };
        any = extend(any);
        if writes {
            written = extend(written);
        }
    }
    Ok(())
}

/// Lengths of the sub-ranges of a tensor of `len` elements.
/// `tensors` (laid out alike), each run of consecutive sub-ranges that lie end to end in one
/// buffer in every one of them merged into one sub-range of at most `max_len` elements: the
/// same elements, one dispatch where there were several (views of an arena handed over one
/// by one step as the arena itself does).
pub(crate) fn merge_contiguous<const N: usize>(tensors: [&GpuTensor; N], max_len: usize) -> [GpuTensor; N] {
    let follows = |a: &Segment, b: &Segment| a.buffer == b.buffer && a.offset + a.bytes() == b.offset;
    let mut merged = tensors.map(|t| GpuTensor { segments: Vec::new(), ..t.clone() });
    let count = tensors.first().map_or(0, |t| t.segments.len());
    for i in 0..count {
        let joins = tensors.iter().zip(&merged).all(|(t, m)| {
            m.segments
                .last()
                .is_some_and(|last| last.len + t.segments[i].len <= max_len && follows(last, &t.segments[i]))
        });
        for (t, m) in tensors.iter().zip(merged.iter_mut()) {
            let s = &t.segments[i];
            match m.segments.last_mut() {
                Some(last) if joins => last.len += s.len,
                _ => m.segments.push(s.clone()),
            }
        }
    }
    merged
}

pub(crate) fn segment_lens(len: usize, seg_len: usize) -> Vec<usize> {
    (0..len.div_ceil(seg_len)).map(|i| seg_len.min(len - i * seg_len)).collect()
}

fn read_segment(ctx: &GpuContext, s: &Segment, out: &mut Vec<u8>) -> Result<()> {
    if !s.buffer.usage().contains(wgpu::BufferUsages::COPY_SRC) {
        return Err(Error::MissingUsage { what: "tensor read", missing: wgpu::BufferUsages::COPY_SRC });
    }
    let staging = ctx.scoped("reading a tensor", || {
        let staging = ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgpu-optim readback"),
            size: s.bound_bytes(),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&s.buffer, s.offset, &staging, 0, s.bound_bytes());
        ctx.queue().submit([encoder.finish()]);
        staging
    })?;
    // Whole words were copied; the elements are the first `bytes()`.
    read_mapped(ctx, &staging, |bytes| out.extend_from_slice(&bytes[..s.bytes() as usize]))
}

impl GpuTensor {
    /// Records a copy of this tensor into `dst`, laid out alike (update tracking keeps the
    /// parameters of before a step this way).
    pub(crate) fn record_copy_into(&self, encoder: &mut wgpu::CommandEncoder, dst: &GpuTensor) {
        for (s, d) in self.segments.iter().zip(&dst.segments) {
            encoder.copy_buffer_to_buffer(&s.buffer, s.offset, &d.buffer, d.offset, s.bound_bytes());
        }
    }
}

/// Maps a `MAP_READ` buffer once everything submitted has run, hands its bytes to `f`, and
/// unmaps it: how a caller reads back a buffer of its own (timestamps, logs) through the
/// same error handling as the crate's reads.
pub fn read_mapped<T>(ctx: &GpuContext, buffer: &wgpu::Buffer, f: impl FnOnce(&[u8]) -> T) -> Result<T> {
    let (tx, rx) = futures_intrusive::channel::shared::oneshot_channel();
    buffer.map_async(wgpu::MapMode::Read, .., move |r| {
        tx.send(r).ok();
    });
    ctx.wait()?;
    match pollster::block_on(rx.receive()) {
        Some(Ok(())) => {}
        Some(Err(e)) => return Err(Error::Readback(e.to_string())),
        None => return Err(Error::Readback("the map callback was dropped".into())),
    }
    let out = {
        let view = buffer.get_mapped_range(..).map_err(|e| Error::Readback(e.to_string()))?;
        f(&view)
    };
    buffer.unmap();
    Ok(out)
}

/// Host data an optimizer accepts: slices, vectors and contiguous ndarrays.
pub trait HostData {
    /// The data as one contiguous slice, or an error if it is not contiguous.
    fn as_f32s(&self) -> Result<&[f32]>;
}

impl HostData for [f32] {
    fn as_f32s(&self) -> Result<&[f32]> {
        Ok(self)
    }
}
impl HostData for Vec<f32> {
    fn as_f32s(&self) -> Result<&[f32]> {
        Ok(self)
    }
}
impl<const N: usize> HostData for [f32; N] {
    fn as_f32s(&self) -> Result<&[f32]> {
        Ok(self)
    }
}
impl HostData for Array1<f32> {
    fn as_f32s(&self) -> Result<&[f32]> {
        self.as_slice().ok_or(Error::NotContiguous { what: "ndarray" })
    }
}
impl HostData for ArrayView1<'_, f32> {
    fn as_f32s(&self) -> Result<&[f32]> {
        self.to_slice().ok_or(Error::NotContiguous { what: "ndarray view" })
    }
}
