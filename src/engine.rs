//! Pipelines, layouts and dispatch geometry: compile each shader variant once, and cover a
//! sub-range of any length with a vec4 dispatch plus a tail dispatch.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::format::ElementFormat;
use crate::gpu::GpuContext;
use crate::optim::{Kernel, ScalarBlock, StateSlot};
use crate::precision::{MASTER, ParamStore};
use crate::tensor::GpuTensor;
use crate::tuning::{ScalarBinding, Tuning};

const PRELUDE: &str = include_str!("../shaders/common.wgsl");
const FORMATS: &str = crate::format::WGSL;
const SHAPED: &str = include_str!("../shaders/shaped.wgsl");
const ELEMENTWISE: &str = include_str!("../shaders/elementwise.wgsl");
const REDUCE: &str = include_str!("../shaders/reduce.wgsl");
const BLOCKWISE: &str = include_str!("../shaders/blockwise.wgsl");

/// The element formats one compiled variant reads: the parameters' and gradients' (one
/// format, checked where they are bound) and each state slot's.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(crate) struct Formats {
    pub params: ElementFormat,
    pub state: Vec<ElementFormat>,
    /// How `store_p` stores an updated parameter.
    pub store: ParamStore,
}

impl Formats {
    /// Every tensor in f32: the norm, health and finalize kernels, a shaped step's.
    pub fn f32(states: usize) -> Self {
        Formats { params: ElementFormat::F32, state: vec![ElementFormat::F32; states], store: ParamStore::Nearest }
    }

    /// Whether a state slot is 8-bit blockwise: the step then runs a block per workgroup
    /// (shaders/blockwise.wgsl).
    pub fn is_blockwise(&self) -> bool {
        self.state.contains(&ElementFormat::Blockwise8)
    }

    /// Whether the step binds a sub-range uniform and the quantization maps (stochastic
    /// rounding's element index and seed; whether 8-bit state is quantized).
    pub fn has_sub_range(&self) -> bool {
        self.store == ParamStore::Stochastic || self.is_blockwise()
    }

    /// The width line: the type `V` a kernel computes on (f32, four elements per invocation,
    /// or `tail`: one), the horizontal sum of one `V`, and whether any of its tensors is in a
    /// 16-bit format (`PACKED`: two to a word, loaded and stored through the conversions of
    /// shaders/formats.wgsl).
    fn width_line(&self, tail: bool) -> String {
        // Any tensor in a 16-bit format shares words: the tail then runs in one invocation.
        let packed = std::iter::once(&self.params).chain(&self.state).any(|f| f.is_packed());
        if tail {
            format!(
                "alias V = f32; alias VU = u32; alias VB = bool; const TAIL = true; const PACKED = {packed};\n\
                 fn hsum(x: V) -> f32 {{ return x; }}\n"
            )
        } else {
            format!(
                "alias V = vec4<f32>; alias VU = vec4<u32>; alias VB = vec4<bool>; const TAIL = false; \
                 const PACKED = {packed};\n\
                 fn hsum(x: V) -> f32 {{ return x.x + x.y + x.z + x.w; }}\n"
            )
        }
    }
}

/// How a shader module is assembled from its source: the one composition step.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Composition {
    /// The source alone (no prelude, no step table): the norm, health and finalize kernels.
    Standalone,
    /// Width line, prelude, the family's update and the element-wise driver.
    Elementwise,
    /// As `Elementwise`, plus the reduction driver (`shaders/reduce.wgsl`).
    Staged,
    /// As `Elementwise` at scalar width, plus the block-wise driver of 8-bit state
    /// (`shaders/blockwise.wgsl`).
    Blockwise,
    /// Width line, prelude and a shaped family with entry points of its own (Adafactor).
    OwnEntries,
}

impl Composition {
    fn source(
        self,
        formats: &Formats,
        tail: bool,
        scalars: ScalarBinding,
        state: &[StateSlot],
        source: &str,
    ) -> String {
        if self == Composition::Standalone {
            return source.to_string();
        }
        let width = formats.width_line(tail);
        let space = match scalars {
            ScalarBinding::Storage => "storage, read",
            ScalarBinding::Uniform => "uniform",
        };
        let table = format!("@group(0) @binding(0) var<{space}> scalar_table: array<Slot, SCALAR_SLOTS>;\n");
        match self {
            Composition::Standalone => format!("{width}{PRELUDE}{table}\n{source}\n"),
            // A shaped family's entries: the pieces they share, and the formats' bit
            // conversions (Muon's bf16 rounding).
            Composition::OwnEntries => format!("{width}{PRELUDE}{FORMATS}{SHAPED}{table}\n{source}\n"),
            Composition::Elementwise => {
                let tensors = tensor_accessors(state, formats, tail);
                format!("{width}{PRELUDE}{FORMATS}{table}{tensors}\n{source}\n{ELEMENTWISE}")
            }
            Composition::Staged => {
                let tensors = tensor_accessors(state, formats, tail);
                format!("{width}{PRELUDE}{FORMATS}{table}{tensors}\n{source}\n{ELEMENTWISE}\n{REDUCE}")
            }
            Composition::Blockwise => {
                let tensors = tensor_accessors(state, formats, tail);
                format!("{width}{PRELUDE}{FORMATS}{table}{tensors}\n{source}\n{ELEMENTWISE}\n{BLOCKWISE}")
            }
        }
    }

    /// Whether every buffer access of the module is in range by construction (see
    /// [`Tuning::runtime_checks`]): only the element-wise driver's kernels are, every index
    /// below `arrayLength(&p)` with every tensor bound at `p`'s length.
    fn in_range_by_construction(self) -> bool {
        self == Composition::Elementwise
    }
}

/// The tensors of an element-wise or staged step (group 1: `p`, `g`, the state in
/// [`Kernel::state`] order, then the master weights or the rounding key where the step keeps
/// them) and the accessors the family's update reads and writes them through: `load_NAME(i)`
/// and `store_NAME(i, x)` (for `g` only the load), `tensor_len()` in units of `V`. The
/// bindings themselves are `tensor_NAME`, so a family cannot bypass the accessors, and how a
/// tensor is stored stays the engine's alone. Every tensor is bound read-write, the gradients
/// included: WebGPU forbids one buffer to be bound read-only and read-write in one dispatch,
/// and parameters and gradients often share an arena.
///
/// `p` and `g` in a 16-bit format (`params`) are words holding two elements: at vec4 width a
/// `vec2<u32>` per V, unpacked and packed whole; at scalar width (the tail, which one
/// invocation runs: shaders/elementwise.wgsl) one half of a word, the other half kept.
/// Their element count is `2 × words` less the padding half of an odd length, which the
/// tail's `TAIL_LEN` (`len % 4`) tells.
///
/// How `store_p` stores ([`ParamStore`]): rounded to nearest; stochastically rounded with the
/// random bits of the element's index in the optimizer (the sub-range's first, from the
/// `sub_range` uniform, plus its own) and the step; or, with master weights, `load_p` and
/// `store_p` read and write the f32 `tensor_master_param` and `store_p` also stores the
/// parameter rounded to nearest.
///
/// An 8-bit state slot (a block-wise step, shaders/blockwise.wgsl) is words of codes and
/// absmax per block: `load_NAME` dequantizes, `store_NAME` keeps the value in the workgroup
/// and folds its magnitude into the block's maximum, and the generated `finish_block`
/// quantizes and stores; a sub-range whose tensor is under 4096 elements (`sub_range`
/// says) keeps f32 words instead.
fn tensor_accessors(state: &[StateSlot], formats: &Formats, tail: bool) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let codec = |f: ElementFormat| match f {
        ElementFormat::BF16 => Some("bf16"),
        ElementFormat::F16 => Some("f16"),
        _ => None,
    };
    // A step with 8-bit state runs one element per invocation, a block per workgroup
    // (shaders/blockwise.wgsl): 16-bit parameters are then stored through the workgroup, a
    // word per invocation, after the block's update.
    let blockwise = formats.is_blockwise();
    // The binding's element type, how element `i` (in units of V) loads, and the statement
    // that stores `x` there, for a tensor `name` of codec `packed` (none: f32).
    let access = |name: &str, packed: Option<&str>, stochastic: bool| -> (String, String, String) {
        let encode = |f: &str, x: &str, lane: &str| {
            if stochastic {
                format!("bf16_encode_stochastic({x}, random_at({lane}))")
            } else {
                format!("{f}_encode({x})")
            }
        };
        match (packed, tail) {
            (None, _) => ("V".into(), format!("tensor_{name}[i]"), format!("tensor_{name}[i] = x;")),
            (Some(f), false) => {
                let lane = |k: u32| encode(f, &format!("x[{k}]"), &format!("4u * i + {k}u"));
                let save = if stochastic {
                    format!(
                        "tensor_{name}[i] = vec2<u32>({} | ({} << 16u), {} | ({} << 16u));",
                        lane(0),
                        lane(1),
                        lane(2),
                        lane(3)
                    )
                } else {
                    format!("tensor_{name}[i] = pack4_{f}(x);")
                };
                ("vec2<u32>".into(), format!("unpack4_{f}(tensor_{name}[i])"), save)
            }
            (Some(f), true) => (
                "u32".into(),
                format!("{f}_decode((tensor_{name}[i / 2u] >> (16u * (i % 2u))) & 0xffffu)"),
                if blockwise {
                    format!("new_{name}[i % BLOCK] = {};", encode(f, "x", "i"))
                } else {
                    format!(
                        "let w = i / 2u; let at = 16u * (i % 2u); \
                         tensor_{name}[w] = (tensor_{name}[w] & ~(0xffffu << at)) | ({} << at);",
                        encode(f, "x", "i")
                    )
                },
            ),
        }
    };
    // Writing into a String cannot fail.
    let mut declare = |binding: usize, name: &str, ty: &str| {
        let _ = writeln!(out, "@group(1) @binding({binding}) var<storage, read_write> tensor_{name}: array<{ty}>;");
    };
    let packed = codec(formats.params);
    let stochastic = formats.store == ParamStore::Stochastic;
    let (p_ty, p_load, p_save) = access("p", packed, stochastic);
    declare(0, "p", &p_ty);
    let (g_ty, g_load, _) = access("g", packed, false);
    declare(1, "g", &g_ty);
    let mut functions = format!("fn load_g(i: u32) -> V {{ return {g_load}; }}\n");
    // What a block-wise step does before its block's update (each 8-bit slot's maximum
    // cleared) and after it: each 8-bit slot quantized with its block's absmax, then its
    // codes stored a word per invocation, the 16-bit parameters likewise.
    let (mut start, mut quantize, mut store) = (String::new(), String::new(), String::new());
    for (k, slot) in state.iter().enumerate() {
        let name = slot.torch_name;
        let format = formats.state.get(k).copied().unwrap_or_default();
        if format == ElementFormat::Blockwise8 {
            declare(2 + k, name, "u32");
            let map = if slot.signed { "0u" } else { "256u" };
            let _ = writeln!(
                functions,
                "var<workgroup> new_{name}: array<f32, BLOCK>;\n\
                 var<workgroup> max_{name}: atomic<u32>;\n\
                 var<workgroup> codes_{name}: array<u32, BLOCK>;\n\
                 fn packed_codes_{name}(lid: u32) -> u32 {{\n\
                 let c = 4u * lid;\n\
                 return codes_{name}[c] | (codes_{name}[c + 1u] << 8u) | (codes_{name}[c + 2u] << 16u) | \
                 (codes_{name}[c + 3u] << 24u);\n}}\n\
                 fn load_{name}(i: u32) -> V {{\n\
                 if !sub_range_quantized() {{ return bitcast<f32>(tensor_{name}[i]); }}\n\
                 let w = BLOCK_WORDS * (i / BLOCK);\n\
                 let code = (tensor_{name}[w + (i % BLOCK) / 4u] >> (8u * (i % 4u))) & 0xffu;\n\
                 return qmap({map} + code) * bitcast<f32>(tensor_{name}[w + BLOCK / 4u]);\n}}\n\
                 fn store_{name}(i: u32, x: V) {{\n\
                 if sub_range_quantized() {{\n\
                 new_{name}[i % BLOCK] = x;\n\
                 atomicMax(&max_{name}, bitcast<u32>(x) & 0x7fffffffu);\n\
                 }} else {{ tensor_{name}[i] = bitcast<u32>(x); }}\n}}"
            );
            let _ = writeln!(start, "atomicStore(&max_{name}, 0u);");
            let _ = writeln!(
                quantize,
                "if sub_range_quantized() {{\n\
                 codes_{name}[lid] = select(0u, quantize(new_{name}[lid], block_absmax(atomicLoad(&max_{name})), {map}), inside);\n}}"
            );
            let _ = writeln!(
                store,
                "if sub_range_quantized() {{\n\
                 if lid < BLOCK / 4u {{ tensor_{name}[BLOCK_WORDS * block + lid] = packed_codes_{name}(lid); }}\n\
                 else if lid == BLOCK / 4u {{ tensor_{name}[BLOCK_WORDS * block + lid] = bitcast<u32>(block_absmax(atomicLoad(&max_{name}))); }}\n}}"
            );
        } else {
            let (ty, load, save) = access(name, codec(format), false);
            declare(2 + k, name, &ty);
            let _ = writeln!(
                functions,
                "fn load_{name}(i: u32) -> V {{ return {load}; }}\nfn store_{name}(i: u32, x: V) {{ {save} }}"
            );
        }
    }
    if blockwise && packed.is_some() {
        // Each invocation of the first half stores one word: its two elements', or where the
        // length is odd the last element and the padding half as it was.
        let _ = writeln!(
            functions,
            "var<workgroup> new_p: array<u32, BLOCK>;\n\
             fn store_halves(block: u32, lid: u32, n: u32) {{\n\
             let e = block * BLOCK + 2u * lid;\n\
             if lid < BLOCK / 2u && e < n {{\n\
             let w = e / 2u;\n\
             let high = select(tensor_p[w] >> 16u, new_p[2u * lid + 1u], e + 1u < n);\n\
             tensor_p[w] = (new_p[2u * lid] & 0xffffu) | (high << 16u);\n}}\n}}"
        );
        store.push_str("store_halves(block, lid, n);\n");
    }
    let next = 2 + state.len();
    match formats.store {
        ParamStore::Master => {
            let (ty, load, save) = access(MASTER.torch_name, None, false);
            declare(next, MASTER.torch_name, &ty);
            let _ = writeln!(
                functions,
                "fn load_p(i: u32) -> V {{ return {load}; }}\nfn store_p(i: u32, x: V) {{ {save} {p_save} }}"
            );
        }
        ParamStore::Stochastic | ParamStore::Nearest => {
            let _ = writeln!(
                functions,
                "fn load_p(i: u32) -> V {{ return {p_load}; }}\nfn store_p(i: u32, x: V) {{ {p_save} }}"
            );
        }
    }
    if formats.has_sub_range() {
        let storage = next + usize::from(formats.store == ParamStore::Master);
        let _ = writeln!(
            out,
            "// The sub-range's first element in the optimizer (low, high word), the seed of stochastic\n\
             // rounding (low, high word), and whether its 8-bit state is quantized (a tensor of fewer\n\
             // than 4096 elements keeps f32 state).\n\
             @group(1) @binding({storage}) var<uniform> sub_range: array<vec4<u32>, 2>;\n\
             // The dynamic quantization maps: signed at 0, unsigned at 256 (crate::quant).\n\
             @group(1) @binding({}) var<uniform> qmaps: array<vec4<f32>, 128>;\n\
             fn qmap(k: u32) -> f32 {{ return qmaps[k / 4u][k % 4u]; }}\n\
             fn sub_range_quantized() -> bool {{ return sub_range[1].x != 0u; }}\n\
             fn random_at(e: u32) -> u32 {{\n\
             let lo = sub_range[0].x + e;\n\
             return random_bits(lo, sub_range[0].y + u32(lo < e), step_counter[0] + 1u, sub_range[0].zw);\n}}",
            storage + 1
        );
    }
    if blockwise {
        let _ = writeln!(
            functions,
            "fn start_block(lid: u32) {{\nif lid == 0u {{\n{start}}}\nworkgroupBarrier();\n}}\n\
             fn finish_block(block: u32, lid: u32, inside: bool, n: u32) {{\n\
             workgroupBarrier();\n{quantize}workgroupBarrier();\n{store}}}"
        );
    }
    out.push_str(&functions);
    let mut codecs: Vec<&str> =
        std::iter::once(formats.params).chain(formats.state.iter().copied()).filter_map(codec).collect();
    codecs.sort_unstable();
    codecs.dedup();
    for f in codecs {
        let _ = writeln!(
            out,
            "fn unpack4_{f}(w: vec2<u32>) -> vec4<f32> {{\n\
             return vec4<f32>({f}_decode(w.x & 0xffffu), {f}_decode(w.x >> 16u), {f}_decode(w.y & 0xffffu), \
             {f}_decode(w.y >> 16u));\n}}\n\
             fn pack4_{f}(x: vec4<f32>) -> vec2<u32> {{\n\
             return vec2<u32>({f}_encode(x.x) | ({f}_encode(x.y) << 16u), {f}_encode(x.z) | ({f}_encode(x.w) << 16u));\n}}"
        );
    }
    // A 16-bit binding of whole words reads one V more than there are whole vec4s where the
    // length is 3 mod 4 (its last word pairs the last element with the padding half).
    out.push_str(match (packed, tail) {
        (Some(_), true) => "fn tensor_len() -> u32 { return 2u * arrayLength(&tensor_p) - (TAIL_LEN & 1u); }\n",
        (Some(_), false) => "fn tensor_len() -> u32 { return arrayLength(&tensor_p) - u32(TAIL_LEN == 3u); }\n",
        (None, _) => "fn tensor_len() -> u32 { return arrayLength(&tensor_p); }\n",
    });
    out
}

/// Where slot `i`'s bytes lie in the step table: its scalars at `i * size`, its tag
/// `tag_offset` after them (`struct Slot` in shaders/common.wgsl, every member on 16 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlotLayout {
    pub tag_offset: usize,
    pub size: usize,
}

impl SlotLayout {
    pub const fn for_scalars(scalar_size: usize) -> Self {
        let tag_offset = scalar_size.next_multiple_of(16);
        SlotLayout { tag_offset, size: tag_offset + 16 }
    }
}

/// The largest step table: [`SCALAR_SLOTS`] slots of the largest scalars ([`ScalarBlock`]).
pub(crate) const MAX_TABLE_BYTES: u64 =
    SlotLayout::for_scalars(size_of::<ScalarBlock>()).size as u64 * SCALAR_SLOTS as u64;

/// Storage buffers a shaped step binds per stage: the step table and counter; p, g, the
/// unfactored state, the factored state and the work buffer.
pub(crate) const SHAPED_STORAGE: u32 = 7;

/// Bytes of a sub-range's reduction window (`SegmentReduce` in shaders/reduce.wgsl).
pub(crate) const SEGMENT_REDUCE_BYTES: u64 = 16;

/// Steps whose scalars can be in flight at once: one `run` submit covers at most this many
/// steps, and at most this many may be recorded with `record` between two submits of the
/// queue (the step table's slots; `shaders/common.wgsl` has the same constant, checked by a
/// test).
pub const SCALAR_SLOTS: u32 = 256;

/// Bytes of the window of a uniform struct (a shaped step's sub-range and layout tables).
pub(crate) const UNIFORM_BYTES: u64 = 64;

/// One uniform struct's window of `buffer` from byte `offset`: bound once, then moved over a
/// table of structs by dynamic offsets (or fixed at `offset`).
pub(crate) fn uniform_window(buffer: &wgpu::Buffer, offset: u64) -> wgpu::BindingResource<'_> {
    wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer, offset, size: wgpu::BufferSize::new(UNIFORM_BYTES) })
}

/// A bind group of `resources` at bindings 0, 1, 2, … in order (the caller scopes errors).
pub(crate) fn bind_in_order(
    ctx: &GpuContext,
    label: &str,
    layout: &wgpu::BindGroupLayout,
    resources: Vec<wgpu::BindingResource<'_>>,
) -> wgpu::BindGroup {
    let entries: Vec<_> = resources
        .into_iter()
        .enumerate()
        .map(|(b, resource)| wgpu::BindGroupEntry { binding: b as u32, resource })
        .collect();
    ctx.device().create_bind_group(&wgpu::BindGroupDescriptor { label: Some(label), layout, entries: &entries })
}

/// The two compiled widths of one variant (and a staged family's reductions).
#[derive(Clone, Debug)]
pub(crate) struct Pipelines {
    /// Four elements per invocation over the whole vec4s of a sub-range, the tuning's
    /// `items_per_invocation` vec4s per invocation.
    pub vec4: wgpu::ComputePipeline,
    /// The same at the other (items per invocation, tail length) some sub-ranges are planned
    /// with: fewer items for small sub-ranges ([`SegmentPlan::new`]); for 16-bit parameters
    /// the sub-range's `len % 4` too (`TAIL_LEN`, which tells a 16-bit tensor's length).
    pub other_vec4: Vec<((u32, u32), wgpu::ComputePipeline)>,
    /// One element per invocation over the last `len % 4` elements.
    pub tail: wgpu::ComputePipeline,
    /// 16-bit parameters: the tail kernel for each other `len % 4` (`TAIL_LEN`) some
    /// sub-ranges have (`tail` is the first's).
    pub other_tails: Vec<(u32, wgpu::ComputePipeline)>,
    /// Whether the parameters are a 16-bit format (the kernels then follow `len % 4`).
    packed: bool,
    /// An element-wise step's last dispatch, which also advances the step counter: `main`
    /// at the width of that dispatch (`None` for a staged family, or where the device binds
    /// too few storage buffers for it).
    pub advancing: Option<wgpu::ComputePipeline>,
    /// The counter's advance as a dispatch of its own, after a step with no `advancing`.
    pub advance: wgpu::ComputePipeline,
    /// A staged family's reduction stage, at vec4 and at scalar width.
    pub reduce: Option<(wgpu::ComputePipeline, wgpu::ComputePipeline)>,
    /// A per-block reduction stage (one workgroup per block, scalar width).
    pub reduce_blocks: Option<wgpu::ComputePipeline>,
}

impl Pipelines {
    /// The vec4 kernel at `items` vec4s per invocation (one [`SegmentPlan`] uses).
    pub fn vec4_at(&self, plan: &SegmentPlan) -> &wgpu::ComputePipeline {
        let key = Self::vec4_key(self.packed, plan);
        self.other_vec4.iter().find(|(k, _)| *k == key).map_or(&self.vec4, |(_, p)| p)
    }

    /// What a plan's vec4 kernel depends on: its items per invocation and, for 16-bit
    /// parameters, whether its length is 3 mod 4 (`TAIL_LEN` 3: see `tensor_accessors`).
    fn vec4_key(packed: bool, plan: &SegmentPlan) -> (u32, u32) {
        (plan.items, if packed && plan.tail_len == 3 { 3 } else { 0 })
    }

    /// The tail kernel of a sub-range whose tail has `tail_len` elements.
    pub fn tail_of(&self, tail_len: u32) -> &wgpu::ComputePipeline {
        let key = Self::tail_key(self.packed, tail_len);
        self.other_tails.iter().find(|(n, _)| *n == key).map_or(&self.tail, |(_, p)| p)
    }

    /// What a tail kernel depends on: for 16-bit parameters the tail's length (`TAIL_LEN`,
    /// which tells the tensor's length); an f32 one on nothing.
    fn tail_key(packed: bool, tail_len: u32) -> u32 {
        if packed { tail_len } else { 0 }
    }
}

/// `v` sorted, each value once.
fn distinct<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort_unstable();
    v.dedup();
    v
}

/// A shader module before composition: a family's source, how it is assembled, and the
/// element formats it reads.
#[derive(Clone, Copy)]
struct Module<'a> {
    family: &'static str,
    source: &'static str,
    composition: Composition,
    formats: &'a Formats,
    /// The state tensors an element-wise or staged module's accessors are declared for.
    state: &'static [StateSlot],
}

/// The formats of a standalone kernel, which binds f32 buffers of its own.
static STANDALONE: std::sync::LazyLock<Formats> = std::sync::LazyLock::new(|| Formats::f32(0));

impl Module<'static> {
    fn standalone(family: &'static str, source: &'static str) -> Self {
        Module { family, source, composition: Composition::Standalone, formats: &STANDALONE, state: &[] }
    }
}

#[derive(Hash, PartialEq, Eq)]
struct VariantKey {
    family: &'static str,
    composition: Composition,
    entry: &'static str,
    tail: bool,
    formats: Formats,
    workgroup_size: u32,
    items: u32,
    scalars: ScalarBinding,
    checked: bool,
    /// Override constants as (name, f64 bits), in the kernel's order.
    constants: Vec<(&'static str, u64)>,
}

/// Bytes of the sub-range uniform stochastic rounding and 8-bit state bind: the sub-range's
/// first element's index in the optimizer (low, high word), the seed (low, high word), and
/// whether its 8-bit state is quantized.
pub(crate) const SUB_RANGE_BYTES: u64 = 32;

/// Bytes of the quantization maps' uniform: 512 f32 (signed, then unsigned).
pub(crate) const QMAPS_BYTES: u64 = 2048;

/// Group 1 of an element-wise or staged step for `n` tensors beside p and g (the state, and
/// the master weights where kept), and the pipeline layouts over it, indexed by `n`.
struct TensorLayouts {
    groups: Vec<wgpu::BindGroupLayout>,
    pipelines: Vec<wgpu::PipelineLayout>,
    /// Under the advancing group 0, which binds the next counter too: one tensor fewer fits.
    advancing: Vec<wgpu::PipelineLayout>,
}

/// Compiled state shared by every optimizer of one context.
pub(crate) struct Engine {
    /// Group 0: the step table and the GPU step counter (read-only), the gradient control.
    pub step_layout: wgpu::BindGroupLayout,
    /// Group 0 of a step's last dispatch and of the advance: as `step_layout`, and the next
    /// step counter read-write (see shaders/common.wgsl).
    pub advancing_layout: wgpu::BindGroupLayout,
    advance_pipeline_layout: wgpu::PipelineLayout,
    /// Group 1 of an element-wise or staged step, and its pipeline layouts.
    tensors: TensorLayouts,
    /// The same with the rounding key of stochastic rounding after the tensors.
    keyed: TensorLayouts,
    /// Group 2 of a staged family: partials, per-tensor sums, the sub-range's window.
    pub reduce_layout: wgpu::BindGroupLayout,
    /// Step, tensors and reduction groups, per state count.
    staged_pipeline_layouts: Vec<wgpu::PipelineLayout>,
    /// The reduction's finalize kernel: partials, per-tensor sums, tensor ranges.
    pub finalize_layout: wgpu::BindGroupLayout,
    finalize_pipeline_layout: wgpu::PipelineLayout,
    /// A shaped step's groups ([`crate::factored`]): step table and counter, sub-range and
    /// layout uniforms, gradient control; p, g, the unfactored state, the factored state and
    /// the work buffer.
    /// `None` on a device that binds fewer than [`SHAPED_STORAGE`] storage buffers per stage.
    shaped: Option<([wgpu::BindGroupLayout; 2], wgpu::PipelineLayout)>,
    /// The gradient-norm kernels' groups: control, partials and sub-range info; one gradient.
    pub norm_layouts: [wgpu::BindGroupLayout; 2],
    norm_pipeline_layout: wgpu::PipelineLayout,
    /// The dynamic quantization maps of 8-bit state ([`crate::quant`]), signed then unsigned,
    /// as the uniform every block-wise step binds.
    pub qmaps: wgpu::Buffer,
    /// The health check's layouts: counts and slot info; one tensor and its values before.
    pub monitor_layouts: [wgpu::BindGroupLayout; 2],
    monitor_pipeline_layout: wgpu::PipelineLayout,
    pipelines: Mutex<HashMap<VariantKey, wgpu::ComputePipeline>>,
}

/// Every tensor binding is read-write, gradients included: WebGPU forbids one buffer to be
/// bound read-only and read-write in the same dispatch, and parameters and gradients often
/// share one arena buffer.
fn storage(binding: u32) -> wgpu::BindGroupLayoutEntry {
    storage_buffer(binding, false)
}

/// A storage binding the kernels only read (the step table and counter): wgpu orders
/// dispatches that write a buffer with a barrier, and none is needed between readers.
fn read_only(binding: u32) -> wgpu::BindGroupLayoutEntry {
    storage_buffer(binding, true)
}

fn storage_buffer(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

/// Bytes of the gradient control the step kernels read as a uniform: `[1 / loss scale,
/// clip coefficient, found_inf, total norm]`.
pub(crate) const CONTROL_BYTES: u64 = 16;

/// The usages of a gradient-control buffer: written by the norm kernels (storage), read by
/// the step kernels (uniform), copied into the caller's logs.
pub(crate) const CONTROL_USAGES: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::UNIFORM)
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// A uniform binding of at least `bytes` (a window moved by dynamic offsets, or fixed).
fn uniform(binding: u32, dynamic: bool, bytes: u64) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: dynamic,
            min_binding_size: wgpu::BufferSize::new(bytes),
        },
        count: None,
    }
}

impl Engine {
    pub fn new(device: &wgpu::Device, queue: &wgpu::Queue, tuning: &Tuning) -> Self {
        let group = |label, entries: &[wgpu::BindGroupLayoutEntry]| {
            device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(label), entries })
        };
        let pipeline_layout = |groups: &[&wgpu::BindGroupLayout]| {
            let groups: Vec<_> = groups.iter().map(|g| Some(*g)).collect();
            device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("wgpu-optim step"),
                bind_group_layouts: &groups,
                immediate_size: 0,
            })
        };
        // The gradient control, binding 5 of every step kernel's group 0.
        let control = uniform(5, false, CONTROL_BYTES);
        // The recorded index of the step (a window moved by dynamic offset), binding 6.
        let stamp = uniform(6, true, STAMP_BYTES);
        // The step table, binding 0, read-only storage or uniform.
        let table = match tuning.scalars {
            ScalarBinding::Storage => read_only(0),
            ScalarBinding::Uniform => uniform(0, false, 0),
        };
        let step_layout = group("wgpu-optim step", &[table, read_only(1), control, stamp]);
        // The step's last dispatch: the same, and the next counter read-write.
        let advancing_layout = group("wgpu-optim step advancing", &[table, read_only(1), storage(4), control, stamp]);
        let advance_pipeline_layout = pipeline_layout(&[&advancing_layout]);
        // As many state tensors as the device binds beside the step table, the counter, p and
        // g (storage buffers per stage: 8 in WebGPU and Metal, so up to 4 states).
        let max_state = (device.limits().max_storage_buffers_per_shader_stage as usize).saturating_sub(4);
        let tensor_layouts = |key: bool| {
            let layouts: Vec<_> = (0..=max_state as u32)
                .map(|n| {
                    let mut entries: Vec<_> = (0..2 + n).map(storage).collect();
                    if key {
                        entries.extend([uniform(2 + n, false, SUB_RANGE_BYTES), uniform(3 + n, false, QMAPS_BYTES)]);
                    }
                    group("wgpu-optim tensors", &entries)
                })
                .collect();
            TensorLayouts {
                pipelines: layouts.iter().map(|t| pipeline_layout(&[&step_layout, t])).collect(),
                // With the next counter: one tensor fewer fits.
                advancing: layouts
                    .iter()
                    .take(layouts.len().saturating_sub(1))
                    .map(|t| pipeline_layout(&[&advancing_layout, t]))
                    .collect(),
                groups: layouts,
            }
        };
        let (tensors, keyed) = (tensor_layouts(false), tensor_layouts(true));
        let reduce_layout =
            group("wgpu-optim reduction", &[storage(0), storage(1), uniform(2, true, SEGMENT_REDUCE_BYTES)]);
        // Two storage buffers more than an element-wise family: two states fewer fit.
        let staged_pipeline_layouts = tensors
            .groups
            .iter()
            .take(tensors.groups.len().saturating_sub(2))
            .map(|t| pipeline_layout(&[&step_layout, t, &reduce_layout]))
            .collect();
        let finalize_layout = group("wgpu-optim reduction finalize", &[storage(0), storage(1), storage(2)]);
        let finalize_pipeline_layout = pipeline_layout(&[&finalize_layout]);
        let shaped = (device.limits().max_storage_buffers_per_shader_stage >= SHAPED_STORAGE).then(|| {
            let layouts = [
                group(
                    "wgpu-optim shaped step uniforms",
                    &[
                        table,
                        read_only(1),
                        uniform(2, true, UNIFORM_BYTES),
                        uniform(3, false, UNIFORM_BYTES),
                        control,
                        stamp,
                    ],
                ),
                group("wgpu-optim shaped step tensors", &(0..5).map(storage).collect::<Vec<_>>()),
            ];
            let pipeline = pipeline_layout(&[&layouts[0], &layouts[1]]);
            (layouts, pipeline)
        });
        let norm_layouts = [
            group("wgpu-optim grad norm", &[storage(0), storage(1), uniform(2, true, UNIFORM_BYTES), storage(3)]),
            group("wgpu-optim grad norm gradient", &[storage(0)]),
        ];
        let norm_pipeline_layout = pipeline_layout(&[&norm_layouts[0], &norm_layouts[1]]);
        let monitor_layouts = [
            group("wgpu-optim health", &[storage(0), uniform(1, true, UNIFORM_BYTES)]),
            group("wgpu-optim health tensor", &[storage(0), storage(1)]),
        ];
        let monitor_pipeline_layout = pipeline_layout(&[&monitor_layouts[0], &monitor_layouts[1]]);
        let qmaps = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgpu-optim quantization maps"),
            size: QMAPS_BYTES,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let maps: Vec<f32> = crate::quant::QMAP_SIGNED.iter().chain(&crate::quant::QMAP_UNSIGNED).copied().collect();
        queue.write_buffer(&qmaps, 0, bytemuck::cast_slice(&maps));
        Engine {
            qmaps,
            step_layout,
            advancing_layout,
            advance_pipeline_layout,
            tensors,
            keyed,
            reduce_layout,
            staged_pipeline_layouts,
            finalize_layout,
            finalize_pipeline_layout,
            shaped,
            norm_layouts,
            norm_pipeline_layout,
            monitor_layouts,
            monitor_pipeline_layout,
            pipelines: Mutex::new(HashMap::new()),
        }
    }

    /// Storage buffers per shader stage the device binds (as many as the layouts were built
    /// for).
    fn storage_per_stage(&self) -> usize {
        self.tensors.groups.len() + 3
    }

    /// The layouts of steps that store parameters `store`'s way, and the tensors their
    /// group 1 binds beside p and g: `kernel`'s state and the master weights where kept.
    fn layouts_for(&self, kernel: &Kernel, formats: &Formats) -> (&TensorLayouts, usize) {
        let n = kernel.state.len() + usize::from(formats.store == ParamStore::Master);
        (if formats.has_sub_range() { &self.keyed } else { &self.tensors }, n)
    }

    /// The tensor bind-group layout of `kernel` storing parameters `store`'s way: p, g, its
    /// state tensors, then the master weights or the rounding key.
    pub fn tensor_layout(&self, kernel: &Kernel, formats: &Formats) -> Result<&wgpu::BindGroupLayout> {
        let store = formats.store;
        let (layouts, n) = self.layouts_for(kernel, formats);
        layouts.groups.get(n).ok_or_else(|| {
            let master = if store == ParamStore::Master { " and the master weights" } else { "" };
            Error::OverLimit(format!(
                "{} keeps {} state tensors{master}; beside the step table, its counter, the parameters and the \
                 gradients that needs {} storage buffers per shader stage, and this device binds {} \
                 (max_storage_buffers_per_shader_stage): use a device with more",
                kernel.family,
                kernel.state.len(),
                n + 4,
                self.storage_per_stage()
            ))
        })
    }

    /// The vec4 and tail pipelines of one element-wise variant at every items per
    /// invocation `plans` use, and the step's last dispatch's (the last plan's width and
    /// items), compiled on first use.
    pub fn pipelines(
        &self,
        ctx: &GpuContext,
        kernel: &'static Kernel,
        formats: &Formats,
        constants: &[(&'static str, f64)],
        plans: &[SegmentPlan],
    ) -> Result<Pipelines> {
        // 8-bit state: a block per workgroup, one element per invocation, no vec4 kernel.
        let blockwise = formats.is_blockwise();
        let last_tail = blockwise || plans.last().is_some_and(SegmentPlan::ends_in_tail);
        let items = ctx.tuning().items_per_invocation;
        // A 16-bit kernel depends on its sub-range's length % 4; an f32 one does not.
        let packed = formats.params.is_packed();
        let tail_key = |p: &SegmentPlan| Pipelines::tail_key(packed, p.tail_len);
        let last = plans.last().map_or((items, 0), |p| (p.items, tail_key(p)));
        let vec4_keys =
            distinct(plans.iter().map(|p| Pipelines::vec4_key(packed, p)).filter(|&k| k != (items, 0)).collect());
        let tail_lens = distinct(plans.iter().filter(|p| blockwise || p.ends_in_tail()).map(tail_key).collect());
        self.tensor_layout(kernel, formats)?;
        let (layouts, n) = self.layouts_for(kernel, formats);
        if let Some(f) = std::iter::once(&formats.params).chain(&formats.state).find(|f| f.is_packed())
            && kernel.is_staged()
        {
            return Err(Error::Unsupported(format!(
                "{} tensors for {}: a step with a reduction stage reads f32 parameters, gradients and state only \
                 (the element-wise optimizers take 16-bit ones)",
                f.name(),
                kernel.family
            )));
        }
        if blockwise && kernel.is_staged() {
            return Err(Error::Unsupported(format!(
                "8-bit state for {}: a step with a reduction stage keeps f32 state (the element-wise optimizers \
                 take 8-bit state)",
                kernel.family
            )));
        }
        let (layout, composition) = if kernel.is_staged() {
            let layout = self.staged_pipeline_layouts.get(kernel.state.len()).ok_or_else(|| {
                Error::OverLimit(format!(
                    "{} keeps {} state tensors, and its reduction binds two buffers more: {} storage buffers \
                     per shader stage, where this device binds {} (max_storage_buffers_per_shader_stage)",
                    kernel.family,
                    kernel.state.len(),
                    kernel.state.len() + 6,
                    self.storage_per_stage()
                ))
            })?;
            (layout, Composition::Staged)
        } else if blockwise {
            (&layouts.pipelines[n], Composition::Blockwise)
        } else {
            (&layouts.pipelines[n], Composition::Elementwise)
        };
        let (main, main_advancing) =
            if blockwise { ("main_blockwise", "main_blockwise_advancing") } else { ("main", "main_advancing") };
        let mut constants = constants.to_vec();
        constants.push(("ITEMS", f64::from(items)));
        if !constants.iter().any(|(n, _)| *n == "CONTROLLED") {
            constants.push(("CONTROLLED", 0.0));
        }
        let blocks = crate::step::block_reduction(kernel.stages);
        if let Some((block, max)) = blocks {
            constants.extend([("BLOCK", f64::from(block)), ("BLOCK_MAX", crate::optim::flag(max))]);
        }
        let c = &constants;
        let module = Module { family: kernel.family, source: kernel.source, composition, formats, state: kernel.state };
        let reduce_blocks =
            if blocks.is_some() { Some(self.pipeline(ctx, &module, layout, true, "reduce_blocks", c)?) } else { None };
        let reduce = if kernel.is_staged() && blocks.is_none() {
            Some((
                self.pipeline(ctx, &module, layout, false, "reduce", c)?,
                self.pipeline(ctx, &module, layout, true, "reduce", c)?,
            ))
        } else {
            None
        };
        // The same constants at other items per invocation and tail lengths.
        let with = |n: u32, tail: u32| -> Vec<(&'static str, f64)> {
            let mut v: Vec<_> = c.iter().map(|&(k, v)| if k == "ITEMS" { (k, f64::from(n)) } else { (k, v) }).collect();
            v.push(("TAIL_LEN", f64::from(tail)));
            v
        };
        let advancing = match layouts.advancing.get(n) {
            Some(layout) if !kernel.is_staged() => {
                Some(self.pipeline(ctx, &module, layout, last_tail, main_advancing, &with(last.0, last.1))?)
            }
            _ => None,
        };
        let first_tail = tail_lens.first().copied().unwrap_or(0);
        let other_tails = tail_lens
            .iter()
            .skip(1)
            .map(|&t| Ok((t, self.pipeline(ctx, &module, layout, true, main, &with(items, t))?)))
            .collect::<Result<Vec<_>>>()?;
        let vec4_keys = if blockwise { Vec::new() } else { vec4_keys };
        let other_vec4 = vec4_keys
            .into_iter()
            .map(|(n, t)| Ok(((n, t), self.pipeline(ctx, &module, layout, false, "main", &with(n, t))?)))
            .collect::<Result<Vec<_>>>()?;
        let tail = self.pipeline(ctx, &module, layout, true, main, &with(items, first_tail))?;
        Ok(Pipelines {
            packed,
            other_vec4,
            vec4: if blockwise { tail.clone() } else { self.pipeline(ctx, &module, layout, false, "main", c)? },
            tail,
            other_tails,
            advancing,
            advance: self.pipeline(ctx, &module, &self.advance_pipeline_layout, true, "advance", c)?,
            reduce,
            reduce_blocks,
        })
    }

    /// The reduction's finalize kernel (shaders/reduce_finalize.wgsl), compiled on first use.
    pub fn finalize_pipeline(&self, ctx: &GpuContext) -> Result<wgpu::ComputePipeline> {
        const SOURCE: &str = include_str!("../shaders/reduce_finalize.wgsl");
        let module = Module::standalone("reduce_finalize", SOURCE);
        self.pipeline(ctx, &module, &self.finalize_pipeline_layout, true, "finalize", &[])
    }

    /// One entry point of a shaped family's shader (scalar width, f32 tensors), compiled on
    /// first use.
    pub fn shaped_pipeline(
        &self,
        ctx: &GpuContext,
        kernel: &'static Kernel,
        entry: &'static str,
        constants: &[(&'static str, f64)],
    ) -> Result<wgpu::ComputePipeline> {
        let formats = Formats::f32(kernel.state.len());
        let (family, source) = (kernel.family, kernel.source);
        let module = Module { family, source, composition: Composition::OwnEntries, formats: &formats, state: &[] };
        let layout = if entry == "advance" { &self.advance_pipeline_layout } else { &self.shaped(kernel)?.1 };
        self.pipeline(ctx, &module, layout, true, entry, constants)
    }

    /// A shaped step's bind-group and pipeline layouts, or an error naming the limit.
    pub fn shaped(&self, kernel: &Kernel) -> Result<&([wgpu::BindGroupLayout; 2], wgpu::PipelineLayout)> {
        self.shaped.as_ref().ok_or_else(|| {
            Error::OverLimit(format!(
                "{}'s step binds {SHAPED_STORAGE} storage buffers per shader stage, and this device binds {} \
                 (max_storage_buffers_per_shader_stage): use a device with more",
                kernel.family,
                self.storage_per_stage()
            ))
        })
    }

    /// One entry point of the gradient-norm shader, compiled on first use.
    pub fn norm_pipeline(&self, ctx: &GpuContext, entry: &'static str) -> Result<wgpu::ComputePipeline> {
        const SOURCE: &str = include_str!("../shaders/grad_norm.wgsl");
        self.pipeline(ctx, &Module::standalone("grad_norm", SOURCE), &self.norm_pipeline_layout, true, entry, &[])
    }

    /// The train/eval move of a schedule-free optimizer's parameters (shaders/mode_swap.wgsl,
    /// on the health check's layouts), compiled on first use.
    pub fn mode_swap_pipeline(&self, ctx: &GpuContext) -> Result<wgpu::ComputePipeline> {
        const SOURCE: &str = include_str!("../shaders/mode_swap.wgsl");
        self.pipeline(ctx, &Module::standalone("mode_swap", SOURCE), &self.monitor_pipeline_layout, true, "main", &[])
    }

    /// The health check's kernel, compiled on first use.
    pub fn monitor_pipeline(&self, ctx: &GpuContext) -> Result<wgpu::ComputePipeline> {
        const SOURCE: &str = include_str!("../shaders/monitor.wgsl");
        self.pipeline(ctx, &Module::standalone("monitor", SOURCE), &self.monitor_pipeline_layout, true, "main", &[])
    }

    /// Compiles (once per variant) `entry` of a module, at vec4 width or at scalar (`tail`)
    /// width.
    fn pipeline(
        &self,
        ctx: &GpuContext,
        module: &Module<'_>,
        layout: &wgpu::PipelineLayout,
        tail: bool,
        entry: &'static str,
        constants: &[(&'static str, f64)],
    ) -> Result<wgpu::ComputePipeline> {
        let Module { family, source, composition, formats, state } = *module;
        let tuning = ctx.tuning();
        let workgroup_size = tuning.workgroup_size;
        let checked = tuning.runtime_checks || !composition.in_range_by_construction();
        let key = VariantKey {
            family,
            composition,
            entry,
            tail,
            formats: formats.clone(),
            workgroup_size,
            items: tuning.items_per_invocation,
            scalars: tuning.scalars,
            checked,
            constants: constants.iter().map(|&(n, v)| (n, v.to_bits())).collect(),
        };
        let mut cache = self.pipelines.lock().map_err(|_| Error::Wgpu {
            during: "compiling a pipeline",
            message: "the pipeline cache was poisoned by a panic in another thread".into(),
        })?;
        if let Some(p) = cache.get(&key) {
            return Ok(p.clone());
        }
        let mut all: Vec<(&str, f64)> = constants.to_vec();
        if composition != Composition::Standalone {
            all.push(("WORKGROUP_SIZE", f64::from(workgroup_size)));
        }
        let source = composition.source(formats, tail, tuning.scalars, state, source);
        let pipeline = ctx.scoped("compiling a pipeline", || {
            let descriptor =
                wgpu::ShaderModuleDescriptor { label: Some(family), source: wgpu::ShaderSource::Wgsl(source.into()) };
            let module = if checked {
                ctx.device().create_shader_module(descriptor)
            } else {
                // SAFETY: every buffer access of an element-wise module is in range by
                // construction (`Composition::in_range_by_construction`): each index is below
                // `arrayLength(&p)`; every tensor of a dispatch is bound at `p`'s length (the
                // gradients' sub-ranges are checked to match, `Error::LayoutMismatch`; the state
                // is allocated like the parameters; an unused state slot is never accessed, its
                // variant's override being false); the table is indexed modulo its SCALAR_SLOTS
                // slots and the counter at 0..3 of its 4 words. Its only loop runs ITEMS times.
                unsafe { ctx.device().create_shader_module_trusted(descriptor, wgpu::ShaderRuntimeChecks::unchecked()) }
            };
            ctx.device().create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(family),
                layout: Some(layout),
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &all,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            })
        })?;
        cache.insert(key, pipeline.clone());
        Ok(pipeline)
    }
}

/// The GPU-resident step of one optimizer: a counter of the steps it has taken, on the GPU,
/// and a table of per-step scalars indexed by it. The host writes the scalars of the steps
/// it records (f64 arithmetic, as torch) into slot `step % SCALAR_SLOTS` ahead of the submit,
/// with the step's number as the slot's tag; the kernels of each step read slot
/// `counter + 1`, and the step's last dispatch (or an `advance` after it) writes the next
/// count. Recording creates nothing and reads nothing back.
///
/// A slot is the step's scalars, then its tag (`struct Slot` in shaders/common.wgsl): one
/// queue write per submit covers both. The counter is two buffers of `[steps taken, stale
/// flag, stamp]` (the stamp: the index of the recorded step that is to read it, checked
/// against that step's own from `stamps`), read and written crosswise on alternate recorded steps: step `r` (counting every
/// step recorded) reads `counters[r % 2]` and writes `counters[(r + 1) % 2]`, so the current
/// count is in `counters[recorded % 2]`. A step whose slot is tagged with another step is
/// not taken and sets the flag (see `scalars_stale`).
pub(crate) struct StepTable {
    pub table: wgpu::Buffer,
    counters: [wgpu::Buffer; 2],
    /// The gradient control the kernels read when `CONTROLLED`: [1/scale, coef, found_inf,
    /// norm]; this optimizer's own neutral one unless a shared one is attached.
    pub control: wgpu::Buffer,
    /// Steps recorded so far, taken or not (its parity says which counter is current).
    recorded: u64,
    /// Each recorded step's index (mod 2^32), at `(index % SCALAR_SLOTS) * stamp_stride`: a
    /// step checks that the counter it reads was written by the step recorded before it.
    stamps: wgpu::Buffer,
    stamp_stride: u32,
    stamp_staging: Vec<u8>,
    /// Where a slot's scalars and tag lie.
    slot: SlotLayout,
    scalar_size: usize,
    /// The table as last written.
    staging: Vec<u8>,
}

/// Group 0 of a step's dispatches, for each parity of the recorded step: the step kernels'
/// (table and counter, read-only), and the last dispatch's or the advance's (the next
/// counter read-write too).
pub(crate) struct StepGroups {
    pub step: [wgpu::BindGroup; 2],
    pub advancing: [wgpu::BindGroup; 2],
}

/// Bytes of a counter buffer: steps taken, stale flag, the index of the recorded step that
/// follows its writer (u32 each), padded.
const COUNTER_BYTES: u64 = 16;
/// Bytes of a recorded step's index as its kernels read it (a uniform `vec4<u32>`).
pub(crate) const STAMP_BYTES: u64 = 16;

/// Queues slots `start .. start + k` (wrapping at [`SCALAR_SLOTS`]) of `staging`, `size` bytes
/// each, into `buffer` at the same place: one write per contiguous run (two where it wraps).
fn write_slots(ctx: &GpuContext, buffer: &wgpu::Buffer, staging: &[u8], size: usize, start: usize, k: u32) {
    let end = start + k as usize;
    let write = |from: usize, to: usize| {
        ctx.queue().write_buffer(buffer, (from * size) as u64, &staging[from * size..to * size]);
    };
    write(start, end.min(SCALAR_SLOTS as usize));
    if end > SCALAR_SLOTS as usize {
        write(0, end - SCALAR_SLOTS as usize);
    }
}

fn entry(binding: u32, buffer: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry { binding, resource: buffer.as_entire_binding() }
}

impl StepTable {
    pub fn new(ctx: &GpuContext, scalar_size: usize) -> Result<Self> {
        let slot = SlotLayout::for_scalars(scalar_size);
        let stamp_stride = ctx.limits().min_uniform_buffer_offset_alignment.max(STAMP_BYTES as u32);
        let (table, counters, control, stamps) = ctx.scoped("creating the step table", || {
            let buffer = |label, size: u64, usage| {
                ctx.device().create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: size.next_multiple_of(16),
                    usage,
                    mapped_at_creation: false,
                })
            };
            let make = |label, size| {
                let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
                buffer(label, size, usage)
            };
            let control = buffer("wgpu-optim gradient control", CONTROL_BYTES, CONTROL_USAGES);
            ctx.queue().write_buffer(&control, 0, bytemuck::cast_slice(&[1.0f32, 1.0, 0.0, 0.0]));
            let counter = || make("wgpu-optim step counter", COUNTER_BYTES);
            let stamps = buffer(
                "wgpu-optim step stamps",
                u64::from(stamp_stride) * u64::from(SCALAR_SLOTS),
                wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            );
            // Bound as storage or as uniform (`Tuning::scalars`).
            let table = buffer(
                "wgpu-optim step table",
                slot.size as u64 * u64::from(SCALAR_SLOTS),
                wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::UNIFORM
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC,
            );
            (table, [counter(), counter()], control, stamps)
        })?;
        Ok(StepTable {
            table,
            counters,
            control,
            recorded: 0,
            stamps,
            stamp_stride,
            stamp_staging: vec![0; stamp_stride as usize * SCALAR_SLOTS as usize],
            slot,
            scalar_size,
            staging: vec![0; slot.size * SCALAR_SLOTS as usize],
        })
    }

    /// Which parity's bind groups step `j` of the steps about to be recorded uses.
    pub fn parity(&self, j: u32) -> usize {
        ((self.recorded + u64::from(j)) % 2) as usize
    }

    /// The dynamic offset of step `j`'s stamp (of the steps about to be recorded).
    pub fn stamp_offset(&self, j: u32) -> u32 {
        ((self.recorded + u64::from(j)) % u64::from(SCALAR_SLOTS)) as u32 * self.stamp_stride
    }

    /// Counts `k` more steps as recorded.
    pub fn recorded(&mut self, k: u32) {
        self.recorded += u64::from(k);
    }

    /// The counter buffer holding the current count.
    fn current(&self) -> &wgpu::Buffer {
        &self.counters[self.parity(0)]
    }

    /// Queues the scalars `block(j)` of steps `first + j`, `j in 0..k`, with their tags,
    /// into their slots: one queue write per contiguous run of slots (two where the run
    /// wraps).
    pub fn write(&mut self, ctx: &GpuContext, first: u64, k: u32, block: impl Fn(u32) -> ScalarBlock) {
        let (size, scalars, tag_at) = (self.slot.size, self.scalar_size, self.slot.tag_offset);
        let slot = |j: u32| ((first + u64::from(j)) % u64::from(SCALAR_SLOTS)) as usize;
        for j in 0..k {
            let at = slot(j) * size;
            let block = block(j);
            self.staging[at..at + scalars].copy_from_slice(&bytemuck::bytes_of(&block)[..scalars]);
            // The counter is u32 on the GPU and wraps with it.
            let tag = (first + u64::from(j)) as u32;
            self.staging[at + tag_at..at + tag_at + 4].copy_from_slice(&tag.to_ne_bytes());
        }
        write_slots(ctx, &self.table, &self.staging, size, slot(0), k);
        // The recorded index of each of these steps, at its stamp slot.
        let stride = self.stamp_stride as usize;
        let stamp_slot = |j: u32| ((self.recorded + u64::from(j)) % u64::from(SCALAR_SLOTS)) as usize;
        for j in 0..k {
            let at = stamp_slot(j) * stride;
            self.stamp_staging[at..at + 4].copy_from_slice(&((self.recorded + u64::from(j)) as u32).to_ne_bytes());
        }
        write_slots(ctx, &self.stamps, &self.stamp_staging, stride, stamp_slot(0), k);
    }

    /// The GPU's step counter (waits for the GPU).
    pub fn read_counter(&self, ctx: &GpuContext) -> Result<u64> {
        Ok(self.read_counter_and_stale(ctx)?.0)
    }

    /// The GPU's step counter, and whether a step found its slot stale or a recorded step
    /// never ran (waits for the GPU). The newer of the two counters by stamp holds the count:
    /// the current one, unless the last recorded step never ran.
    pub fn read_counter_and_stale(&self, ctx: &GpuContext) -> Result<(u64, bool)> {
        let read = |c| -> Result<[u32; 3]> {
            let v = crate::tensor::GpuTensor::from_buffer(ctx, c, 0, 3)?.read(ctx)?;
            Ok([v[0].to_bits(), v[1].to_bits(), v[2].to_bits()])
        };
        let (current, other) = (read(self.current())?, read(&self.counters[1 - self.parity(0)])?);
        // Stamps wrap with u32: the newer is ahead by less than half the range.
        let newer = if (other[2].wrapping_sub(current[2]) as i32) > 0 { other } else { current };
        let lost = newer[2] != self.recorded as u32;
        Ok((u64::from(newer[0]), newer[1] != 0 || lost))
    }

    /// Sets the GPU's step counter and clears the stale flag (queued).
    pub fn set_counter(&self, ctx: &GpuContext, steps: u32) -> Result<()> {
        ctx.scoped("setting the step counter", || {
            ctx.queue().write_buffer(self.current(), 0, bytemuck::cast_slice(&[steps, 0, self.recorded as u32]));
        })
    }

    /// Binds the table, the counters and `control`: each parity's group 0 for the step
    /// kernels and for the last dispatch or the advance.
    pub fn bind(&self, ctx: &GpuContext, control: &wgpu::Buffer) -> Result<StepGroups> {
        let engine = ctx.engine();
        let [a, b] = &self.counters;
        ctx.scoped("binding the step table", || {
            let step = |counter| {
                ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("wgpu-optim step"),
                    layout: &engine.step_layout,
                    entries: &[entry(0, &self.table), entry(1, counter), entry(5, control), self.stamp_entry()],
                })
            };
            let advancing = |counter, next| {
                ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("wgpu-optim step advancing"),
                    layout: &engine.advancing_layout,
                    entries: &[
                        entry(0, &self.table),
                        entry(1, counter),
                        entry(4, next),
                        entry(5, control),
                        self.stamp_entry(),
                    ],
                })
            };
            StepGroups { step: [step(a), step(b)], advancing: [advancing(a, b), advancing(b, a)] }
        })
    }

    /// Bindings 0, 1 and 6 of a shaped step's group 0 at parity `p`: the table, the counter
    /// the step reads and the stamps.
    pub fn shaped_entries(&self, p: usize) -> [wgpu::BindGroupEntry<'_>; 3] {
        [entry(0, &self.table), entry(1, &self.counters[p]), self.stamp_entry()]
    }

    /// Binding 6: one stamp's window of the stamps, moved by dynamic offset.
    fn stamp_entry(&self) -> wgpu::BindGroupEntry<'_> {
        let resource = wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.stamps,
            offset: 0,
            size: wgpu::BufferSize::new(STAMP_BYTES),
        });
        wgpu::BindGroupEntry { binding: 6, resource }
    }
}

/// Something that records optimizer steps: the GPU optimizer, parameter groups. Their `run` and `record` are the two functions below.
pub(crate) trait Stepper {
    fn context(&self) -> GpuContext;
    /// Computes and checks what recording `k` steps needs (their scalars); changes nothing
    /// that a failure would leave behind.
    fn prepare(&mut self, k: u32) -> Result<()>;
    /// Records `k <= SCALAR_SLOTS` steps into `encoder`.
    fn encode(&mut self, encoder: &mut wgpu::CommandEncoder, k: u32);
    /// Records `k <= SCALAR_SLOTS` steps into an open compute pass.
    fn encode_in_pass(&mut self, pass: &mut wgpu::ComputePass<'_>, k: u32);
    /// Whether update tracking is on (it copies parameters between passes).
    fn tracks_updates(&self) -> bool;
    /// Counts `k` recorded steps as taken (only once they were recorded without error).
    fn taken(&mut self, k: u32);
}

/// Records `k` steps; where update tracking gives (params, before) pairs, the last step gets
/// a pass of its own, behind copies of those parameters.
///
/// All steps go into one compute pass where a step writes one parameter buffer
/// (`one_buffer`), else each
/// step gets a pass: wgpu orders every dispatch of a pass that uses a buffer an earlier
/// dispatch of the pass wrote with a barrier, while the first uses of buffers in a pass are
/// ordered by one barrier before it. A pass per step thus turns a barrier per tensor into one
/// per step for tensors in separate buffers (for one pass of host time per step).
pub(crate) fn encode_passes(
    encoder: &mut wgpu::CommandEncoder,
    k: u32,
    one_buffer: bool,
    tracked: &[Option<(&GpuTensor, &GpuTensor)>],
    record_step: impl Fn(&mut wgpu::ComputePass<'_>, u32),
) {
    if k == 0 {
        return; // nothing recorded, nothing copied
    }
    let per_pass = if one_buffer { k } else { 1 };
    let copies: Vec<_> = tracked.iter().flatten().collect();
    let split = if copies.is_empty() { k } else { k - 1 };
    let pass = |encoder: &mut wgpu::CommandEncoder, steps: std::ops::Range<u32>| {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("wgpu-optim step"),
            timestamp_writes: None,
        });
        for j in steps {
            record_step(&mut pass, j);
        }
    };
    let mut done = 0;
    while done < split {
        let steps = per_pass.min(split - done);
        pass(encoder, done..done + steps);
        done += steps;
    }
    if split < k {
        for (params, before) in copies {
            params.record_copy_into(encoder, before);
        }
        pass(encoder, split..k);
    }
}

/// Takes `steps` steps, `SCALAR_SLOTS` per submit (see [`encode_passes`] for the passes).
pub(crate) fn run(s: &mut impl Stepper, steps: u32) -> Result<()> {
    let ctx = s.context();
    let mut left = steps;
    while left > 0 {
        let k = left.min(SCALAR_SLOTS);
        s.prepare(k)?;
        ctx.scoped("recording a step", || {
            let mut encoder =
                ctx.device().create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("wgpu-optim step") });
            s.encode(&mut encoder, k);
            ctx.queue().submit([encoder.finish()]);
        })?;
        s.taken(k);
        left -= k;
    }
    Ok(())
}

/// `Err` unless `steps` fit between two submits.
fn check_slots(steps: u32) -> Result<()> {
    if steps > SCALAR_SLOTS {
        return Err(Error::OverLimit(format!(
            "{steps} steps recorded at once; at most {SCALAR_SLOTS} fit between two submits"
        )));
    }
    Ok(())
}

/// Records `steps` steps into the caller's compute pass, after what it already holds.
pub(crate) fn record_in_pass(s: &mut impl Stepper, pass: &mut wgpu::ComputePass<'_>, steps: u32) -> Result<()> {
    check_slots(steps)?;
    if s.tracks_updates() {
        return Err(Error::Unsupported(
            "recording into a compute pass with update tracking on: tracking copies the parameters between \
             passes; record into an encoder (`record`), or turn tracking off"
                .into(),
        ));
    }
    s.prepare(steps)?;
    s.context().scoped("recording a step", || s.encode_in_pass(pass, steps))?;
    s.taken(steps);
    Ok(())
}

/// Records `steps` steps into the caller's encoder.
pub(crate) fn record(s: &mut impl Stepper, encoder: &mut wgpu::CommandEncoder, steps: u32) -> Result<()> {
    check_slots(steps)?;
    s.prepare(steps)?;
    s.context().scoped("recording a step", || s.encode(encoder, steps))?;
    s.taken(steps);
    Ok(())
}

/// A 2-D grid of at least `groups` workgroups, at most `max_dim` wide: `(x, y)`.
pub(crate) fn grid(groups: u64, max_dim: u32) -> Result<(u32, u32)> {
    let x = groups.min(u64::from(max_dim));
    let y = groups.div_ceil(x.max(1));
    if y > u64::from(max_dim) {
        return Err(Error::OverLimit(format!(
            "{groups} workgroups exceed a {max_dim}×{max_dim} grid (Tuning::max_workgroups_per_dimension): raise \
             it up to the device's max_compute_workgroups_per_dimension, or split the work (fewer tensors per \
             group, smaller Tuning::segment_bytes)"
        )));
    }
    Ok((x as u32, y as u32))
}

/// What one step's recording has set in a pass, so that setting the same pipeline or group 0
/// again is skipped: wgpu redoes its binding work for every call, the same object or not.
/// Fresh for each run of dispatches that sets everything it uses through it.
#[derive(Default)]
pub(crate) struct PassState<'a> {
    pipeline: Option<&'a wgpu::ComputePipeline>,
    group0: Option<(&'a wgpu::BindGroup, u32)>,
}

impl<'a> PassState<'a> {
    pub fn pipeline(&mut self, pass: &mut wgpu::ComputePass<'_>, pipeline: &'a wgpu::ComputePipeline) {
        if self.pipeline != Some(pipeline) {
            pass.set_pipeline(pipeline);
            self.pipeline = Some(pipeline);
        }
    }

    pub fn group0(&mut self, pass: &mut wgpu::ComputePass<'_>, group: &'a wgpu::BindGroup, offset: u32) {
        if self.group0 != Some((group, offset)) {
            pass.set_bind_group(0, group, &[offset]);
            self.group0 = Some((group, offset));
        }
    }
}

/// The dispatches that cover one sub-range, computed (and checked against the device's
/// limits) once, so that recording a step cannot fail half-way through a pass.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SegmentPlan {
    /// Grid of the vec4 kernel, if the sub-range holds at least one whole vec4.
    vec4: Option<(u32, u32)>,
    /// Workgroups of the tail kernel (0 when the length is a multiple of 4).
    tail: u32,
    /// Vec4s each invocation of the vec4 kernel updates.
    pub items: u32,
    /// Elements of the tail (`len % 4`).
    pub tail_len: u32,
    /// A block-wise step's grid (8-bit state): a workgroup per block of 256 elements, the
    /// whole sub-range in one dispatch of the tail-width kernel.
    blocks: Option<(u32, u32)>,
}

impl SegmentPlan {
    /// The dispatches of a sub-range of `len` elements under `tuning`, at its
    /// `items_per_invocation` — or, where `fewer_items` (an element-wise family's step),
    /// at half as many, and half again, while the grid would have fewer than
    /// `min_workgroups` workgroups: a small tensor is spread over the device rather than
    /// run by a few workgroups.
    pub fn new(len: usize, tuning: &Tuning, fewer_items: bool) -> Result<Self> {
        let vec4s = (len / 4) as u64;
        let per_group = |items: u32| u64::from(tuning.workgroup_size) * u64::from(items);
        let mut items = tuning.items_per_invocation;
        while fewer_items && items > 1 && vec4s.div_ceil(per_group(items)) < u64::from(tuning.min_workgroups) {
            items /= 2;
        }
        let max_dim = tuning.max_workgroups_per_dimension;
        let vec4 = if vec4s > 0 { Some(grid(vec4s.div_ceil(per_group(items)), max_dim)?) } else { None };
        let tail = ((len % 4) as u64).div_ceil(per_group(tuning.items_per_invocation)) as u32;
        Ok(SegmentPlan { vec4, tail, items, tail_len: (len % 4) as u32, blocks: None })
    }

    /// The one dispatch of a block-wise step over a sub-range of `len` elements.
    pub fn blockwise(len: usize, tuning: &Tuning) -> Result<Self> {
        let blocks = grid((len as u64).div_ceil(crate::quant::BLOCK as u64), tuning.max_workgroups_per_dimension)?;
        Ok(SegmentPlan { vec4: None, tail: 0, items: 1, tail_len: (len % 4) as u32, blocks: Some(blocks) })
    }

    /// Records the dispatches of the element-wise stage; the caller has set the bind groups.
    pub fn record<'a>(&self, pass: &mut wgpu::ComputePass<'_>, set: &mut PassState<'a>, pipelines: &'a Pipelines) {
        if let Some((x, y)) = self.blocks {
            set.pipeline(pass, pipelines.tail_of(self.tail_len));
            pass.dispatch_workgroups(x, y, 1);
            return;
        }
        self.record_with(pass, set, pipelines.vec4_at(self), pipelines.tail_of(self.tail_len))
    }

    /// Records the dispatches of the element-wise stage as a step's last: its last dispatch
    /// with `advancing` under the second of `groups` (which also advances the step counter),
    /// a vec4 dispatch before a tail under the first (the step kernels' group 0).
    pub fn record_advancing<'a>(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        set: &mut PassState<'a>,
        pipelines: &'a Pipelines,
        advancing: &'a wgpu::ComputePipeline,
        [(step, stamp), (last, _)]: [(&'a wgpu::BindGroup, u32); 2],
    ) {
        if let Some((x, y)) = self.blocks {
            set.group0(pass, last, stamp);
            set.pipeline(pass, advancing);
            pass.dispatch_workgroups(x, y, 1);
            return;
        }
        if let Some((x, y)) = self.vec4 {
            if self.ends_in_tail() {
                set.group0(pass, step, stamp);
                set.pipeline(pass, pipelines.vec4_at(self));
            } else {
                set.group0(pass, last, stamp);
                set.pipeline(pass, advancing);
            }
            pass.dispatch_workgroups(x, y, 1);
        }
        if self.ends_in_tail() {
            set.group0(pass, last, stamp);
            set.pipeline(pass, advancing);
            pass.dispatch_workgroups(self.tail, 1, 1);
        }
    }

    /// Whether the sub-range's last dispatch is the tail's (its length is not a multiple of 4).
    pub fn ends_in_tail(&self) -> bool {
        self.tail > 0
    }

    /// Records the dispatches of one stage, at vec4 width then the tail.
    pub fn record_with<'a>(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        set: &mut PassState<'a>,
        vec4: &'a wgpu::ComputePipeline,
        tail: &'a wgpu::ComputePipeline,
    ) {
        if let Some((x, y)) = self.vec4 {
            set.pipeline(pass, vec4);
            pass.dispatch_workgroups(x, y, 1);
        }
        if self.tail > 0 {
            set.pipeline(pass, tail);
            pass.dispatch_workgroups(self.tail, 1, 1);
        }
    }

    /// Workgroups of the vec4 dispatch and of the tail dispatch.
    pub fn workgroups(&self) -> (u64, u64) {
        let vec4 = self.vec4.or(self.blocks).map_or(0, |(x, y)| u64::from(x) * u64::from(y));
        (vec4, u64::from(self.tail))
    }
}

#[cfg(test)]
mod tests {
    use super::{Composition, SCALAR_SLOTS, SlotLayout};
    use crate::optim::ALL;
    use crate::tuning::ScalarBinding;

    /// Each layout shared by Rust and WGSL, checked against the WGSL as naga reads it: the
    /// family's `Scalars` struct has the Rust struct's size, its state tensors are bound in
    /// `Kernel::state` order under their torch names after `p` and `g` (a shaped family: the
    /// bindings and uniform structs of `crate::factored`), and the prelude's `SCALAR_SLOTS` is
    /// the Rust constant.
    /// Bytes of the WGSL struct `name` of `module`, as naga lays it out.
    fn struct_size(module: &naga::Module, name: &str) -> usize {
        let (_, t) = module
            .types
            .iter()
            .find(|(_, t)| t.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no struct {name}"));
        let naga::TypeInner::Struct { span, .. } = t.inner else { panic!("{name} is no struct") };
        span as usize
    }

    #[test]
    fn a_small_sub_range_is_planned_with_fewer_items_per_invocation() {
        let limits = wgpu::Limits::default();
        let tuning = |min_workgroups| crate::Tuning {
            workgroup_size: 256,
            items_per_invocation: 8,
            min_workgroups,
            ..crate::Tuning::for_limits(&limits)
        };
        let plan = |len, min, elementwise| super::SegmentPlan::new(len, &tuning(min), elementwise).unwrap();
        // 4096 vec4s: 2 workgroups at 8 items, 4 at 4, 8 at 2, 16 at 1.
        let len = 4 * 4096 + 3;
        assert_eq!((plan(len, 1, true).items, plan(len, 1, true).workgroups()), (8, (2, 1)));
        assert_eq!((plan(len, 4, true).items, plan(len, 4, true).workgroups()), (4, (4, 1)));
        assert_eq!((plan(len, 16, true).items, plan(len, 16, true).workgroups()), (1, (16, 1)));
        assert_eq!(plan(len, 1000, true).items, 1, "never below one item");
        // A staged family's plans keep the tuning's items (its reduction slots follow them).
        assert_eq!(plan(len, 16, false).items, 8);
        // A large sub-range is not touched.
        assert_eq!(plan(1 << 24, 16, true).items, 8);
    }

    /// Byte offset of member `member` of the WGSL struct `name`.
    fn member_offset(module: &naga::Module, name: &str, member: &str) -> usize {
        let (_, t) = module.types.iter().find(|(_, t)| t.name.as_deref() == Some(name)).expect("the struct");
        let naga::TypeInner::Struct { members, .. } = &t.inner else { panic!("{name} is no struct") };
        members.iter().find(|m| m.name.as_deref() == Some(member)).expect("the member").offset as usize
    }

    #[test]
    fn the_rust_and_wgsl_layouts_agree() {
        // Muon's matrix-product step, beside the registry's families.
        let muon: (&str, crate::optim::Maker) = ("muon", || Box::new(crate::optim::Muon::default()));
        for &(name, make) in ALL.iter().chain([&muon]) {
            let o = make();
            let kernel = o.kernel();
            let composition = match kernel {
                k if k.is_shaped() => Composition::OwnEntries,
                k if k.is_staged() => Composition::Staged,
                _ => Composition::Elementwise,
            };
            let formats = super::Formats::f32(kernel.state.len());
            for (tail, scalars) in [false, true].into_iter().flat_map(|t| ScalarBinding::ALL.map(|s| (t, s))) {
                let source = composition.source(&formats, tail, scalars, kernel.state, kernel.source);
                let module = naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| panic!("{name}: {e}"));
                // naga's validator checks the address spaces' layout rules (a uniform array's
                // 16-byte stride, a struct member's 16-byte alignment), at each width the
                // engine compiles (a shaped family's entries: scalar width only).
                if tail || !kernel.is_shaped() {
                    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
                        .validate(&module)
                        .unwrap_or_else(|e| panic!("{name} ({scalars:?}, tail {tail}): {e:?}"));
                }
                assert_eq!(
                    struct_size(&module, "Scalars"),
                    kernel.scalar_size,
                    "{name}: WGSL Scalars vs the Rust struct"
                );
                let slot = SlotLayout::for_scalars(kernel.scalar_size);
                assert_eq!(struct_size(&module, "Slot"), slot.size, "{name}: a slot's size");
                assert_eq!(member_offset(&module, "Slot", "tag"), slot.tag_offset, "{name}: a slot's tag");
                let bound = group1_bindings(&module);
                let names: Vec<&str> = if kernel.is_shaped() {
                    let matmul = kernel.stages.contains(&crate::step::Stage::MatMul);
                    let (structs, bindings) = if matmul {
                        (crate::newton_schulz::UNIFORM_STRUCTS, crate::newton_schulz::BINDINGS)
                    } else {
                        (crate::factored::UNIFORM_STRUCTS, crate::factored::BINDINGS)
                    };
                    for (wgsl, size) in structs {
                        assert_eq!(struct_size(&module, wgsl), size, "{name}: WGSL {wgsl} vs the Rust struct");
                    }
                    bindings.to_vec()
                } else {
                    // The engine declares them (`tensor_accessors`): the family's source declares none.
                    assert!(!kernel.source.contains("@group(1)"), "{name}: the family declares no tensor bindings");
                    ["p", "g"].into_iter().chain(kernel.state.iter().map(|s| s.torch_name)).collect()
                };
                let names: Vec<String> = names
                    .into_iter()
                    .map(|n| if kernel.is_shaped() { n.to_string() } else { format!("tensor_{n}") })
                    .collect();
                let expected: Vec<(u32, String)> =
                    names.into_iter().enumerate().map(|(i, n)| (i as u32, n.to_string())).collect();
                assert_eq!(bound, expected, "{name}: tensor bindings");
                assert_slots(name, &module);
            }
        }
    }

    #[test]
    fn every_way_of_storing_parameters_and_state_composes_a_valid_module() {
        use crate::precision::ParamStore;
        for (name, make) in ALL {
            let kernel = make().kernel();
            if kernel.is_staged() || kernel.is_shaped() {
                continue;
            }
            let stores = [ParamStore::Nearest, ParamStore::Stochastic, ParamStore::Master];
            for (store, state) in
                stores.into_iter().flat_map(|s| [(s, crate::ElementFormat::F32), (s, crate::ElementFormat::Blockwise8)])
            {
                let formats = super::Formats {
                    params: crate::ElementFormat::BF16,
                    state: vec![state; kernel.state.len()],
                    store,
                };
                let composition =
                    if formats.is_blockwise() { Composition::Blockwise } else { Composition::Elementwise };
                // A block-wise step runs at scalar width only.
                for tail in [formats.is_blockwise(), true] {
                    let source =
                        composition.source(&formats, tail, ScalarBinding::Storage, kernel.state, kernel.source);
                    let module = naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| panic!("{name}: {e}"));
                    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
                        .validate(&module)
                        .unwrap_or_else(|e| panic!("{name} ({store:?}, {state:?}, tail {tail}): {e:?}"));
                    let bound = group1_bindings(&module);
                    let mut names: Vec<String> = ["p", "g"]
                        .into_iter()
                        .chain(kernel.state.iter().map(|s| s.torch_name))
                        .map(|n| format!("tensor_{n}"))
                        .collect();
                    if store == ParamStore::Master {
                        names.push("tensor_master_param".into());
                    }
                    if formats.has_sub_range() {
                        names.extend(["sub_range".into(), "qmaps".into()]);
                    }
                    let expected: Vec<(u32, String)> =
                        names.into_iter().enumerate().map(|(i, n)| (i as u32, n)).collect();
                    assert_eq!(bound, expected, "{name} ({store:?}): tensor bindings");
                }
            }
        }
    }

    /// The module's group-1 bindings (the tensors), by binding.
    fn group1_bindings(module: &naga::Module) -> Vec<(u32, String)> {
        let mut bound: Vec<(u32, String)> = module
            .global_variables
            .iter()
            .filter_map(|(_, v)| {
                let b = v.binding.as_ref()?;
                (b.group == 1).then(|| (b.binding, v.name.clone().unwrap_or_default()))
            })
            .collect();
        bound.sort();
        bound
    }

    /// The module's `SCALAR_SLOTS` is the Rust constant.
    fn assert_slots(name: &str, module: &naga::Module) {
        let slots = module
            .constants
            .iter()
            .find(|(_, c)| c.name.as_deref() == Some("SCALAR_SLOTS"))
            .map(|(_, c)| &module.global_expressions[c.init]);
        assert!(
            matches!(slots, Some(naga::Expression::Literal(naga::Literal::U32(n))) if *n == SCALAR_SLOTS),
            "{name}: SCALAR_SLOTS {slots:?}"
        );
    }
}
