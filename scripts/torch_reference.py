"""Reference values for tests/torch_values.rs, computed by torch.optim itself on the CPU.

Rebuilds the tests' inputs exactly (multiples of 1/512 and 1/1024, exact in f32), runs eight
steps of each configuration with the single-tensor path (foreach=False; enough for RAdam and
AdaBelief to pass their rectification threshold), and prints the final parameters as f32
bit patterns, ready to paste into the test. AdaBelief, Lion and Adan come from their authors'
packages (adabelief-pytorch 0.2.1, lion-pytorch 0.2.5, sail-sg/Adan's adan.py, single-tensor
path).
usage: pip install torch adabelief-pytorch==0.2.1 lion-pytorch==0.2.5 \
           git+https://github.com/sail-sg/Adan.git; python3 scripts/torch_reference.py
"""
import contextlib
import io

import torch
from adabelief_pytorch import AdaBelief
from adan import Adan
from lion_pytorch import Lion

from reference_inputs import N, STEPS, grad, param

CASES = [
    ("sgd momentum dampening", torch.optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.25)),
    ("sgd nesterov wd maximize", torch.optim.SGD, dict(lr=0.1, momentum=0.8, nesterov=True, weight_decay=0.01, maximize=True)),
    ("adam", torch.optim.Adam, dict(lr=1e-2)),
    ("adam l2 amsgrad", torch.optim.Adam, dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
    ("adam maximize low beta1", torch.optim.Adam, dict(lr=1e-2, maximize=True, betas=(0.3, 0.99))),
    ("adamw", torch.optim.AdamW, dict(lr=1e-2)),
    ("adamw amsgrad wd", torch.optim.AdamW, dict(lr=1e-2, amsgrad=True, weight_decay=0.3)),
    ("nadam", torch.optim.NAdam, dict(lr=1e-2)),
    ("nadam l2 momentum_decay", torch.optim.NAdam, dict(lr=1e-2, weight_decay=0.1, momentum_decay=0.01)),
    ("nadam decoupled maximize", torch.optim.NAdam, dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ("radam", torch.optim.RAdam, dict(lr=1e-2, betas=(0.9, 0.99))),
    ("radam l2 maximize", torch.optim.RAdam, dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1, maximize=True)),
    ("radam decoupled", torch.optim.RAdam, dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1, decoupled_weight_decay=True)),
    ("adagrad", torch.optim.Adagrad, dict(lr=1e-1)),
    ("adagrad decay init l2 maximize", torch.optim.Adagrad, dict(lr=1e-1, lr_decay=0.1, initial_accumulator_value=0.5, weight_decay=0.1, maximize=True)),
    ("rmsprop", torch.optim.RMSprop, dict(lr=1e-2)),
    ("rmsprop centered", torch.optim.RMSprop, dict(lr=1e-2, centered=True)),
    ("rmsprop momentum", torch.optim.RMSprop, dict(lr=1e-2, momentum=0.9)),
    ("rmsprop centered momentum l2 maximize", torch.optim.RMSprop, dict(lr=1e-2, alpha=0.9, centered=True, momentum=0.5, weight_decay=0.1, maximize=True)),
    ("adamax", torch.optim.Adamax, dict(lr=1e-2)),
    ("adamax l2 maximize", torch.optim.Adamax, dict(lr=1e-2, weight_decay=0.1, maximize=True, betas=(0.3, 0.9))),
    ("adadelta", torch.optim.Adadelta, dict()),
    ("adadelta rho l2 maximize", torch.optim.Adadelta, dict(lr=0.5, rho=0.5, weight_decay=0.1, maximize=True)),
    ("adabelief", AdaBelief, dict(lr=1e-2, betas=(0.9, 0.99), print_change_log=False)),
    ("adabelief unrectified amsgrad", AdaBelief, dict(lr=1e-2, rectify=False, amsgrad=True, eps=1e-8, print_change_log=False)),
    ("adabelief l2 no sgd", AdaBelief, dict(lr=1e-2, weight_decouple=False, weight_decay=0.1, degenerated_to_sgd=False, betas=(0.9, 0.99), print_change_log=False)),
    ("adabelief fixed decay", AdaBelief, dict(lr=1e-2, weight_decay=0.01, fixed_decay=True, print_change_log=False)),
    ("lion", Lion, dict(lr=1e-2)),
    ("lion wd", Lion, dict(lr=1e-2, weight_decay=0.5, betas=(0.5, 0.9))),
    ("lion decoupled", Lion, dict(lr=1e-2, weight_decay=1e-3, decoupled_weight_decay=True)),
    ("adan", Adan, dict(lr=1e-2, foreach=False)),
    ("adan wd", Adan, dict(lr=1e-2, weight_decay=0.1, betas=(0.9, 0.8, 0.95), foreach=False)),
    ("adan no_prox wd", Adan, dict(lr=1e-2, weight_decay=0.1, no_prox=True, foreach=False)),
    # Adafactor: the label ends with the shape the 32 values are viewed as.
    ("adafactor 4x8", torch.optim.Adafactor, dict(lr=1e-2)),
    ("adafactor 2x4x4", torch.optim.Adafactor, dict(lr=1e-2, weight_decay=0.1, maximize=True)),
    ("adafactor 32", torch.optim.Adafactor, dict(lr=1e-2)),
    ("adafactor eps d decay 8x4", torch.optim.Adafactor, dict(lr=0.5, eps=(1e-3, 1e-2), d=1.5, beta2_decay=-0.5)),
]

print(f"// torch {torch.__version__}, CPU, foreach=False; N = {N}, {STEPS} steps")
for label, cls, kw in CASES:
    shape = [int(d) for d in label.split()[-1].split("x")] if label.startswith("adafactor") else [N]
    p = torch.nn.Parameter(torch.tensor([param(i) for i in range(N)], dtype=torch.float32).reshape(shape))
    with contextlib.redirect_stdout(io.StringIO()):  # AdaBelief prints notes when created
        opt = cls([p], foreach=False, **kw) if cls.__module__.startswith("torch.") else cls([p], **kw)
    for k in range(1, STEPS + 1):
        p.grad = torch.tensor([grad(i, k) for i in range(N)], dtype=torch.float32).reshape(shape)
        opt.step()
    bits = p.detach().reshape(-1).numpy().view("uint32")
    print(f'    ("{label}", [' + ", ".join(f"0x{b:08x}" for b in bits) + "]),")
