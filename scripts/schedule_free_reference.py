"""Reference values for tests/schedule_free.rs, from the authors' package (pip: schedulefree).

N parameters param(i), STEPS steps with grad(i, k) (scripts/reference_inputs.py), in train
mode; printed per case: y (the parameters after the last step), z, exp_avg_sq (AdamW), and x
(the parameters after eval()).
usage: pip install schedulefree; python3 scripts/schedule_free_reference.py
"""
import schedulefree
import torch
from reference_inputs import N, STEPS, param, grad

CASES = [
    ("adamw warmup wd", lambda p: schedulefree.AdamWScheduleFree([p], lr=0.01, warmup_steps=3, weight_decay=0.01)),
    ("adamw betas r power", lambda p: schedulefree.AdamWScheduleFree([p], lr=0.01, betas=(0.8, 0.99), r=0.5, weight_lr_power=1.5)),
    ("sgd warmup wd", lambda p: schedulefree.SGDScheduleFree([p], lr=0.1, warmup_steps=2, weight_decay=0.05)),
    ("sgd momentum r", lambda p: schedulefree.SGDScheduleFree([p], lr=0.1, momentum=0.5, r=1.0)),
]


def row(xs):
    return "&[" + ", ".join(repr(float(x)) for x in xs) + "]"


print(f"// schedulefree {getattr(schedulefree, '__version__', '1.4.1')}, torch {torch.__version__}")
for label, make in CASES:
    p = torch.nn.Parameter(torch.tensor([param(i) for i in range(N)], dtype=torch.float32))
    opt = make(p)
    opt.train()
    for k in range(1, STEPS + 1):
        p.grad = torch.tensor([grad(i, k) for i in range(N)], dtype=torch.float32)
        opt.step()
    y = p.detach().clone()
    state = opt.state[p]
    v = state.get("exp_avg_sq", torch.zeros(0))
    opt.eval()
    print(f'    ("{label}", {row(y)},\n        {row(state["z"])},\n        {row(v)},\n        {row(p.detach())}),')
