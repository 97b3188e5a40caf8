// SGDScheduleFree, the authors' package (schedulefree 1.4.1): the parameters hold y, the
// state z; src/optim/schedule_free.rs is the CPU twin.

struct Scalars {
    ckp1: f32,          // F(weight / weight_sum), the averaging weight of this step
    y_coef: f32,        // F(lr_t * (momentum * (1 - ckp1) - 1))
    neg_lr: f32,        // F(-lr_t)
    weight_decay: f32,  // F(weight_decay)
    first_step: u32,    // 1 on the first step: z starts as the parameters
}

// Element i (in units of V) of one step; `main` (shaders/elementwise.wgsl) calls it.
fn update(i: u32, s: Scalars) {
    let y = load_p(i);
    var d = grad(i);
    var z = load_z(i);
    if s.first_step == 1u {
        z = y;
    }
    if WEIGHT_DECAY {
        d = fma(y, V(s.weight_decay), d);
    }
    let y1 = lerp_torch(y, z, s.ckp1);
    store_p(i, fma(d, V(s.y_coef), y1));
    store_z(i, fma(d, V(s.neg_lr), z));
}
