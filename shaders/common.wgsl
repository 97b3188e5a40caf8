// Prelude of every optimizer shader. The engine puts one of two width lines before it:
//   vector kernel: `alias V = vec4<f32>; alias VU = vec4<u32>; alias VB = vec4<bool>; const TAIL = false;`
//   tail kernel:   `alias V = f32;       alias VU = u32;       alias VB = bool;       const TAIL = true;`
// so each optimizer's update is written once, on `V`, and runs four elements at a time over
// the vec4 part of a sub-range and one at a time over its last 0..3.

override WORKGROUP_SIZE: u32 = 256u;

// The GPU-resident step. The step counter is two buffers, `[steps taken, stale flag, stamp]`
// each, used in turn: the kernels of a step read the count in `step_counter`, and the step's last
// dispatch writes the next count into `next_counter`, which the next step reads as its
// `step_counter` (the host binds them crosswise on alternate steps). No dispatch of a step
// then writes what another reads, and wgpu puts no barrier between them; the one barrier
// before the next step orders everything.
// The host writes the scalars of step t (computed in f64, as torch does) and t itself, the
// slot's tag, into slot t % SCALAR_SLOTS of `scalar_table` before the submit that records
// it; every kernel of a step reads the slot of step counter + 1. `Scalars` is each family's
// own struct. The engine declares `scalar_table` itself, as `array<Slot, SCALAR_SLOTS>` in
// the storage or the uniform address space (`Tuning::scalars`): each member of a slot starts
// on 16 bytes, as a uniform array of structs requires, so the bytes are the same in both.
const SCALAR_SLOTS: u32 = 256u;
struct Slot {
    @align(16) s: Scalars,
    @align(16) tag: u32,
}
@group(0) @binding(1) var<storage, read> step_counter: array<u32>;
@group(0) @binding(4) var<storage, read_write> next_counter: array<u32>;
// This step's index among every step recorded (mod 2^32). The counter a step reads carries
// the index of the step its writer expected next: where they differ a recorded step never ran
// (an encoder dropped), the counter is older than the other, and the step is not taken.
@group(0) @binding(6) var<uniform> recorded: vec4<u32>;

fn counter_current() -> bool {
    return step_counter[2] == recorded.x;
}

fn step_scalars() -> Scalars {
    return scalar_table[(step_counter[0] + 1u) % SCALAR_SLOTS].s;
}

// Skipped steps leave the host's count ahead of the GPU's; once it is SCALAR_SLOTS ahead the
// slot of the next step holds a later step's scalars. Such a step is not taken (as if
// skipped) and `step_counter[1]` records it until the host syncs its count.
fn scalars_stale() -> bool {
    let t = step_counter[0] + 1u;
    return scalar_table[t % SCALAR_SLOTS].tag != t;
}

// Gradient control, written by the gradient-norm kernels ahead of each step when clipping
// or loss scaling is on: [1 / loss scale, clip coefficient, found_inf, total norm]. A step
// whose gradients hold a NaN or an infinity is skipped: nothing is written, and the counter
// does not advance. A uniform: step kernels only read it, and it keeps the storage buffers
// of a stage (at most 8 in WebGPU and Metal) for the tensors.
override CONTROLLED: bool = false;
@group(0) @binding(5) var<uniform> grad_control: vec4<f32>;

// A step is not taken when the gradient control found a non-finite gradient, or when its
// slot holds another step's scalars (more than SCALAR_SLOTS steps recorded between two
// submits, or skipped since the last sync): always checked, so no step reads wrong scalars.
fn skipped() -> bool {
    return (CONTROLLED && grad_control[2] != 0.0) || scalars_stale() || !counter_current();
}
// Variant flags most families share (each family passes the ones it has).
override MAXIMIZE: bool = false;
override WEIGHT_DECAY: bool = false;

// g = maximize ? -grad : grad
fn signed(grad: V) -> V {
    if MAXIMIZE {
        return -grad;
    }
    return grad;
}

// torch's first two lines: g = maximize ? -grad : grad, then the L2 term g.add(p, alpha=wd)
// (an fma in torch's vectorised CPU kernel).
fn direction(grad: V, param: V, weight_decay: f32) -> V {
    var d = signed(grad);
    if WEIGHT_DECAY {
        d = fma(param, V(weight_decay), d);
    }
    return d;
}

// torch's `a.lerp_(b, w)` on CPU (ATen Lerp.h, vectorised form): fma(w, b - a, a) for
// |w| < 0.5, else fma(w - 1, b - a, b). `w` is uniform, so the branch is too.
fn lerp_torch(a: V, b: V, w: f32) -> V {
    if abs(w) < 0.5 {
        return fma(V(w), b - a, a);
    }
    return fma(V(w - 1.0), b - a, b);
}

// NaN test by bit pattern: compilers may assume finite math and fold `x != x` away.
fn is_nan(x: V) -> VB {
    return (bitcast<VU>(x) & VU(0x7fffffffu)) > VU(0x7f800000u);
}

// sgn with sgn(0) = 0 and NaN kept, as torch.sgn.
fn sgn(x: V) -> V {
    return select(sign(x), x, is_nan(x));
}

// torch.maximum: NaN-propagating maximum (WGSL's max leaves NaN handling undefined).
fn nan_max(a: V, b: V) -> V {
    return select(max(a, b), a + b, is_nan(a) | is_nan(b));
}

// The counter after this step: + 1 where it was taken, and the stale flag kept or raised.
// Where the counter read is not current (a recorded step never ran), the other one — the
// newer, if it was written since — is kept, and the flag raised: the host learns it at the
// next sync (`Error::StaleSteps`). Run by one invocation of the step's last dispatch (or by
// `advance`).
fn advance_counter() {
    if counter_current() {
        next_counter[0] = select(step_counter[0], step_counter[0] + 1u, !skipped());
        next_counter[1] = step_counter[1] | u32(scalars_stale());
    } else {
        let newer = i32(next_counter[2] - step_counter[2]) > 0;
        next_counter[0] = select(step_counter[0], next_counter[0], newer);
        next_counter[1] = 1u;
    }
    next_counter[2] = recorded.x + 1u;
}

// The advance as a dispatch of its own, after a step whose last kernel does not run it
// (a staged or shaped family's, or one whose layout has no room for `next_counter`).
@compute @workgroup_size(1)
fn advance() {
    advance_counter();
}
