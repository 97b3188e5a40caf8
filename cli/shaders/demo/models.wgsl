// The demo's small models, forward and backward on the GPU over the whole data set (full
// batch): MODEL 0 is linear regression (mean squared error), MODEL 1 a 2-layer MLP classifier
// (tanh hidden layer, softmax cross-entropy). `per_sample` writes each sample's gradient row;
// `reduce_grads` sums the rows in a fixed order (same bits every run); `reduce_stats` records
// the loss and accuracy of the current parameters at the step `counter` holds, then advances it.

struct Info {
    n: u32,        // samples
    params: u32,   // parameters
}

override MODEL: u32 = 1u;
const D_LIN: u32 = 8u;        // linear regression: features
const D: u32 = 2u;            // MLP: inputs
override H: u32 = 32u;        //      hidden units (at most H_MAX)
const H_MAX: u32 = 1024u;
const K: u32 = 3u;            //      classes

@group(0) @binding(0) var<storage, read_write> p: array<f32>;
@group(0) @binding(1) var<storage, read_write> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;        // n × inputs
@group(0) @binding(3) var<storage, read_write> y: array<f32>;        // target, or class index
@group(0) @binding(4) var<storage, read_write> rows: array<f32>;     // n × params gradient rows
@group(0) @binding(5) var<storage, read_write> sample: array<f32>;   // n × (loss, correct)
@group(0) @binding(6) var<storage, read_write> history: array<f32>;  // per step (loss, accuracy)
@group(0) @binding(7) var<storage, read_write> counter: array<u32>;
@group(0) @binding(8) var<uniform> info: Info;

fn linear(i: u32) {
    var z = p[D_LIN];
    for (var d = 0u; d < D_LIN; d = d + 1u) {
        z = z + p[d] * x[i * D_LIN + d];
    }
    let r = z - y[i];
    for (var d = 0u; d < D_LIN; d = d + 1u) {
        rows[i * info.params + d] = r * x[i * D_LIN + d];
    }
    rows[i * info.params + D_LIN] = r;
    sample[2u * i] = 0.5 * r * r;
    sample[2u * i + 1u] = 0.0;
}

fn mlp(i: u32) {
    let w2 = H * D + H;
    let b2 = w2 + K * H;
    let row = i * info.params;
    var h: array<f32, H_MAX>;
    for (var k = 0u; k < H; k = k + 1u) {
        var a = p[H * D + k];
        for (var d = 0u; d < D; d = d + 1u) {
            a = a + p[k * D + d] * x[i * D + d];
        }
        h[k] = tanh(a);
    }
    var z: array<f32, K>;
    var top = -3.4e38;
    var best = 0u;
    for (var c = 0u; c < K; c = c + 1u) {
        var s = p[b2 + c];
        for (var k = 0u; k < H; k = k + 1u) {
            s = s + p[w2 + c * H + k] * h[k];
        }
        z[c] = s;
        if s > top {
            top = s;
            best = c;
        }
    }
    var total = 0.0;
    for (var c = 0u; c < K; c = c + 1u) {
        total = total + exp(z[c] - top);
    }
    let label = u32(y[i]);
    sample[2u * i] = log(total) + top - z[label];   // -log softmax(z)[label]
    sample[2u * i + 1u] = select(0.0, 1.0, best == label);
    // Backward: dz = softmax(z) - onehot(label).
    var dh: array<f32, H_MAX>;
    for (var c = 0u; c < K; c = c + 1u) {
        let dz = exp(z[c] - top) / total - select(0.0, 1.0, c == label);
        rows[row + b2 + c] = dz;
        for (var k = 0u; k < H; k = k + 1u) {
            rows[row + w2 + c * H + k] = dz * h[k];
            dh[k] = dh[k] + dz * p[w2 + c * H + k];   // function variables start at zero
        }
    }
    for (var k = 0u; k < H; k = k + 1u) {
        let da = dh[k] * (1.0 - h[k] * h[k]);
        rows[row + H * D + k] = da;
        for (var d = 0u; d < D; d = d + 1u) {
            rows[row + k * D + d] = da * x[i * D + d];
        }
    }
}

@compute @workgroup_size(64)
fn per_sample(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x >= info.n {
        return;
    }
    if MODEL == 0u {
        linear(id.x);
    } else {
        mlp(id.x);
    }
}

@compute @workgroup_size(64)
fn reduce_grads(@builtin(global_invocation_id) id: vec3<u32>) {
    let j = id.x;
    if j >= info.params {
        return;
    }
    var s = 0.0;
    for (var i = 0u; i < info.n; i = i + 1u) {
        s = s + rows[i * info.params + j];
    }
    g[j] = s / f32(info.n);
}

@compute @workgroup_size(1)
fn reduce_stats() {
    var loss = 0.0;
    var correct = 0.0;
    for (var i = 0u; i < info.n; i = i + 1u) {
        loss = loss + sample[2u * i];
        correct = correct + sample[2u * i + 1u];
    }
    let t = counter[0];
    history[2u * t] = loss / f32(info.n);
    history[2u * t + 1u] = correct / f32(info.n);
    counter[0] = t + 1u;
}
