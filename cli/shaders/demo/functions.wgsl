// The demo's test functions: value and analytic gradient at every start of a batch of
// independent 2-D problems (params interleaved x0, y0, x1, y1, ...). The batch is `blocks`
// blocks of `per_block` starts, one block per learning rate; the first start of each block is
// the canonical one, whose path is recorded. `counter` holds the steps taken so far.

struct Info {
    starts: u32,      // all starts, every block
    per_block: u32,
    blocks: u32,
    threshold: f32,   // a start "reaches" the minimum when f - f_min < threshold
    f_min: f32,
}

override FUNCTION: u32 = 0u;   // 0 Rosenbrock, 1 Himmelblau, 2 Beale, 3 quadratic, 4 saddle

@group(0) @binding(0) var<storage, read_write> p: array<f32>;
@group(0) @binding(1) var<storage, read_write> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> hit: array<u32>;      // first step below threshold
@group(0) @binding(3) var<storage, read_write> path: array<f32>;     // [step][block] (x, y, f)
@group(0) @binding(4) var<storage, read_write> counter: array<u32>;
@group(0) @binding(5) var<uniform> info: Info;

// The ill-conditioned quadratic: 0.5 (u² + 50 v²) in axes rotated by 30°.
const C: f32 = 0.8660254;   // cos 30°
const S: f32 = 0.5;         // sin 30°
const KAPPA: f32 = 50.0;

// (f, df/dx, df/dy)
fn value_and_grad(x: f32, y: f32) -> vec3<f32> {
    switch FUNCTION {
        case 0u: {   // Rosenbrock (a = 1, b = 100)
            let r = y - x * x;
            return vec3<f32>((1.0 - x) * (1.0 - x) + 100.0 * r * r, -2.0 * (1.0 - x) - 400.0 * x * r, 200.0 * r);
        }
        case 1u: {   // Himmelblau
            let a = x * x + y - 11.0;
            let b = x + y * y - 7.0;
            return vec3<f32>(a * a + b * b, 4.0 * x * a + 2.0 * b, 2.0 * a + 4.0 * y * b);
        }
        case 2u: {   // Beale
            let a = 1.5 - x + x * y;
            let b = 2.25 - x + x * y * y;
            let c = 2.625 - x + x * y * y * y;
            let dx = 2.0 * a * (y - 1.0) + 2.0 * b * (y * y - 1.0) + 2.0 * c * (y * y * y - 1.0);
            let dy = 2.0 * a * x + 4.0 * b * x * y + 6.0 * c * x * y * y;
            return vec3<f32>(a * a + b * b + c * c, dx, dy);
        }
        case 3u: {   // quadratic
            let u = C * x + S * y;
            let v = -S * x + C * y;
            return vec3<f32>(0.5 * (u * u + KAPPA * v * v), C * u - S * KAPPA * v, S * u + C * KAPPA * v);
        }
        default: {   // saddle at the origin, minima at (0, ±1): x² - y²/2 + y⁴/4
            return vec3<f32>(x * x - 0.5 * y * y + 0.25 * y * y * y * y, 2.0 * x, y * y * y - y);
        }
    }
}

@compute @workgroup_size(64)
fn gradient(@builtin(global_invocation_id) id: vec3<u32>) {
    let s = id.x;
    if s >= info.starts {
        return;
    }
    let x = p[2u * s];
    let y = p[2u * s + 1u];
    let v = value_and_grad(x, y);
    g[2u * s] = v.y;
    g[2u * s + 1u] = v.z;
    let t = counter[0];
    if v.x - info.f_min < info.threshold && hit[s] == 0xffffffffu {
        hit[s] = t;
    }
    if s % info.per_block == 0u {
        let at = 3u * (t * info.blocks + s / info.per_block);
        path[at] = x;
        path[at + 1u] = y;
        path[at + 2u] = v.x;
    }
}

@compute @workgroup_size(1)
fn tick() {
    counter[0] = counter[0] + 1u;
}
