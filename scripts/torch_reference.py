"""Reference values for tests/torch_values.rs, computed by torch.optim itself on the CPU.

Rebuilds the tests' inputs exactly (multiples of 1/512 and 1/1024, exact in f32), runs three
steps of each configuration with the single-tensor path (foreach=False), and prints the
final parameters as f32 bit patterns, ready to paste into the test.
usage: python3 scripts/torch_reference.py
"""
import torch

N, STEPS = 32, 3

def param(i):
    return ((i * 7919 + 13) % 2001 - 1000) / 512.0

def grad(i, k):
    return ((i * 104729 + k * 7717 + 5) % 2001 - 1000) / 1024.0

CASES = [
    ("sgd momentum dampening", torch.optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.25)),
    ("sgd nesterov wd maximize", torch.optim.SGD, dict(lr=0.1, momentum=0.8, nesterov=True, weight_decay=0.01, maximize=True)),
    ("adam", torch.optim.Adam, dict(lr=1e-2)),
    ("adam l2 amsgrad", torch.optim.Adam, dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
    ("adam maximize low beta1", torch.optim.Adam, dict(lr=1e-2, maximize=True, betas=(0.3, 0.99))),
    ("adamw", torch.optim.AdamW, dict(lr=1e-2)),
    ("adamw amsgrad wd", torch.optim.AdamW, dict(lr=1e-2, amsgrad=True, weight_decay=0.3)),
]

print(f"// torch {torch.__version__}, CPU, foreach=False; N = {N}, {STEPS} steps")
for label, cls, kw in CASES:
    p = torch.nn.Parameter(torch.tensor([param(i) for i in range(N)], dtype=torch.float32))
    opt = cls([p], foreach=False, **kw)
    for k in range(1, STEPS + 1):
        p.grad = torch.tensor([grad(i, k) for i in range(N)], dtype=torch.float32)
        opt.step()
    bits = p.detach().numpy().view("uint32")
    print(f'    ("{label}", [' + ", ".join(f"0x{b:08x}" for b in bits) + "]),")
