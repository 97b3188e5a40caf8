// SGD, torch.optim.SGD single-tensor semantics (spec §1). Variants are override constants.

struct Scalars {
    neg_lr: f32,               // F(-lr)
    weight_decay: f32,         // F(weight_decay)
    momentum: f32,             // F(momentum)
    one_minus_dampening: f32,  // F(1 - dampening)
    first_step: u32,           // 1 on the optimizer's first step: the buffer starts as the gradient
}

override MOMENTUM: bool = false;
override NESTEROV: bool = false;

@group(0) @binding(0) var<uniform> s: Scalars;
@group(1) @binding(0) var<storage, read_write> p: array<V>;
@group(1) @binding(1) var<storage, read_write> g: array<V>;  // read_write: may share a buffer with p
@group(1) @binding(2) var<storage, read_write> momentum_buffer: array<V>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = element_index(arrayLength(&p), wid, nwg, lid);
    if i >= arrayLength(&p) {
        return;
    }
    let param = p[i];
    var d = direction(g[i], param, s.weight_decay);
    if MOMENTUM {
        var buf = d;                                           // first step: clone(g), no dampening
        if s.first_step == 0u {
            buf = fma(d, V(s.one_minus_dampening), momentum_buffer[i] * s.momentum);
        }
        momentum_buffer[i] = buf;
        if NESTEROV {
            d = fma(buf, V(s.momentum), d);                    // g.add(buf, alpha=momentum)
        } else {
            d = buf;
        }
    }
    p[i] = fma(d, V(s.neg_lr), param);                         // p.add_(g, alpha=-lr)
}
