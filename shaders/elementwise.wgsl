// The entry point of every element-wise optimizer: each invocation reads the step's scalars
// once and updates ITEMS elements (in units of V) a workgroup apart, so consecutive
// invocations touch consecutive memory. Grids wider than the device's per-dimension limit
// fold into y; the tail kernel starts after the last whole vec4. Each family's shader
// defines `fn update(i: u32, s: Scalars)`, reading and writing its tensors through the
// accessors the engine declares before it (`load_p(i)`, `store_p(i, x)`, `load_g(i)`, and
// `load_NAME` / `store_NAME` for each state tensor; `tensor_len()` in units of V).

override ITEMS: u32 = 4u;
// A 16-bit tensor's tail: its length % 4 (which tells its element count; see the engine's
// tensor accessors).
override TAIL_LEN: u32 = 0u;

// The gradient as the update sees it: unscaled by the loss scale, then multiplied by the clip
// coefficient (torch's unscale_, then clip_grad_norm_: two roundings).
fn grad(i: u32) -> V {
    if CONTROLLED {
        return (load_g(i) * grad_control[0]) * grad_control[1];
    }
    return load_g(i);
}

fn update_all(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) {
    let n = tensor_len();
    if skipped() {
        return;
    }
    let s = step_scalars();
    if TAIL && PACKED {
        // Two elements share a word: the tail's (at most 3) run in order in one invocation.
        if wid.x == 0u && wid.y == 0u && lid == 0u {
            for (var i = n & ~3u; i < n; i = i + 1u) {
                update(i, s);
            }
        }
        return;
    }
    let first = select(0u, n & ~3u, TAIL) + (wid.y * nwg.x + wid.x) * WORKGROUP_SIZE * ITEMS + lid;
    for (var k = 0u; k < ITEMS; k = k + 1u) {
        let i = first + k * WORKGROUP_SIZE;
        if i < n {
            update(i, s);
        }
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    update_all(wid, nwg, lid);
}

// The step's last dispatch: the same, and its first invocation advances the counter (into
// the buffer no kernel of this step reads), so a step needs no dispatch of its own for it.
@compute @workgroup_size(WORKGROUP_SIZE)
fn main_advancing(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    if wid.x == 0u && wid.y == 0u && lid == 0u {
        advance_counter();
    }
    update_all(wid, nwg, lid);
}
