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

@group(1) @binding(0) var<storage, read_write> p: array<V>;
@group(1) @binding(1) var<storage, read_write> g: array<V>;  // read_write: may share a buffer with p
@group(1) @binding(2) var<storage, read_write> momentum_buffer: array<V>;

// Element i (in units of V) of one step; `main` (shaders/elementwise.wgsl) calls it.
fn update(i: u32, s: Scalars) {
    let param = p[i];
    var d = direction(grad(i), param, s.weight_decay);
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
