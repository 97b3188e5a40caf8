// The GPU step counter's advance, one invocation after each step's kernels (see
// shaders/common.wgsl): + 1 where the step was taken; the stale flag where the step's slot
// held another step's scalars. A module of its own, compiled once per device: the step
// kernels bind the counter read-only, and only this dispatch writes it.
const SCALAR_SLOTS: u32 = 256u;
override CONTROLLED: bool = false;
@group(0) @binding(2) var<storage, read_write> counter: array<u32>;
@group(0) @binding(5) var<uniform> grad_control: vec4<f32>;

@compute @workgroup_size(1)
fn advance() {
    let t = counter[0] + 1u;
    let stale = counter[2u + t % SCALAR_SLOTS] != t;
    if !((CONTROLLED && grad_control[2] != 0.0) || stale) {
        counter[0] = t;
    } else if stale {
        counter[1] = 1u;
    }
}
