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

// Element i (in units of V) of one step; `main` (shaders/elementwise.wgsl) calls it.
fn update(i: u32, s: Scalars) {
    let param = load_p(i);
    var d = direction(grad(i), param, s.weight_decay);
    if MOMENTUM {
        var buf = d;                                           // first step: clone(g), no dampening
        if s.first_step == 0u {
            buf = fma(d, V(s.one_minus_dampening), load_momentum_buffer(i) * s.momentum);
        }
        store_momentum_buffer(i, buf);
        if NESTEROV {
            d = fma(buf, V(s.momentum), d);                    // g.add(buf, alpha=momentum)
        } else {
            d = buf;
        }
    }
    store_p(i, fma(d, V(s.neg_lr), param));                         // p.add_(g, alpha=-lr)
}
