"""Reference values for tests/muon.rs, from torch.optim.Muon itself (torch/optim/_muon.py).

Each case: a parameter matrix of `shape` with param(i) (scripts/reference_inputs.py), three
steps with grad(i, k), k = 1..3; printed: the sampled indices' parameters and momentum
buffers after the last step. "bf16" cases run torch's Muon as it is (Newton–Schulz in
bfloat16); "f32" cases run it with torch's own `_zeropower_via_newtonschulz` copied with
float32 in place of bfloat16 (the crate's `NsPrecision::F32`), patched into the module.
usage: python3 scripts/muon_reference.py
"""
import torch
import torch.optim._muon as muon_module
from reference_inputs import param, grad

STEPS = 3


def zeropower_f32(grad, ns_coefficients, ns_steps, eps):
    # torch's _zeropower_via_newtonschulz, float32 instead of bfloat16.
    a, b, c = ns_coefficients
    ortho_grad = grad.to(dtype=torch.float32, copy=True)
    if grad.size(0) > grad.size(1):
        ortho_grad = ortho_grad.T
    ortho_grad.div_(ortho_grad.norm().clamp(min=eps))
    for _ in range(ns_steps):
        gram_matrix = ortho_grad @ ortho_grad.T
        gram_update = torch.addmm(gram_matrix, gram_matrix, gram_matrix, beta=b, alpha=c)
        ortho_grad = torch.addmm(ortho_grad, gram_update, ortho_grad, beta=a)
    if grad.size(0) > grad.size(1):
        ortho_grad = ortho_grad.T
    return ortho_grad


CASES = [
    ("1x1 bf16", (1, 1), "bf16", dict(lr=0.02)),
    ("3x5 bf16", (3, 5), "bf16", dict(lr=0.02)),
    ("3x5 f32", (3, 5), "f32", dict(lr=0.02)),
    ("4097x3 bf16", (4097, 3), "bf16", dict(lr=0.02)),
    ("4097x3 f32 match_rms_adamw", (4097, 3), "f32", dict(lr=0.02, adjust_lr_fn="match_rms_adamw")),
    ("1023x65 f32", (1023, 65), "f32", dict(lr=0.02)),
    ("65x1023 bf16 no nesterov", (65, 1023), "bf16", dict(lr=0.02, nesterov=False, weight_decay=0.0)),
    ("64x96 f32 spectral ns_steps 3", (64, 96), "f32", dict(lr=0.05, ns_steps=3, adjust_lr_fn="spectral_unclamped", momentum=0.9)),
]
SAMPLES = 97

original = muon_module._zeropower_via_newtonschulz
print(f"// torch {torch.__version__}")
for label, shape, dtype, kwargs in CASES:
    muon_module._zeropower_via_newtonschulz = original if dtype == "bf16" else zeropower_f32
    n = shape[0] * shape[1]
    p = torch.nn.Parameter(torch.tensor([param(i) for i in range(n)], dtype=torch.float32).reshape(shape))
    opt = torch.optim.Muon([p], **kwargs)
    for k in range(1, STEPS + 1):
        p.grad = torch.tensor([grad(i, k) for i in range(n)], dtype=torch.float32).reshape(shape)
        opt.step()
    flat = p.detach().reshape(-1)
    buf = opt.state[p]["momentum_buffer"].reshape(-1)
    idx = sorted(set([0, n - 1] + [i * (n - 1) // (SAMPLES - 1) for i in range(SAMPLES)])) if n > SAMPLES else list(range(n))
    print(f'    ("{label}", &[' + ", ".join(str(i) for i in idx) + "],")
    print("        &[" + ", ".join(repr(float(flat[i])) for i in idx) + "],")
    print("        &[" + ", ".join(repr(float(buf[i])) for i in idx) + "]),")
muon_module._zeropower_via_newtonschulz = original
