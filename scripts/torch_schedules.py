"""Reference learning rates for tests/schedules.rs, printed by torch.optim.lr_scheduler itself.

Each line: a label and the learning rate used by optimizer steps 0..N-1 (the scheduler is
stepped once after every optimizer step, as when it is stepped per iteration), base lr 0.1.
usage: python3 scripts/torch_schedules.py
"""
import torch
from torch.optim import lr_scheduler as S

N = 40
CASES = [
    ("step", lambda o: S.StepLR(o, step_size=7, gamma=0.5)),
    ("multistep", lambda o: S.MultiStepLR(o, milestones=[3, 10, 10, 25], gamma=0.3)),
    ("exponential", lambda o: S.ExponentialLR(o, gamma=0.93)),
    ("cosine", lambda o: S.CosineAnnealingLR(o, T_max=15, eta_min=0.001)),
    ("linear", lambda o: S.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=12)),
    ("warm restarts", lambda o: S.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=2, eta_min=0.002)),
    ("warm restarts mult 1", lambda o: S.CosineAnnealingWarmRestarts(o, T_0=6)),
    ("one cycle", lambda o: S.OneCycleLR(o, max_lr=0.1, total_steps=N, cycle_momentum=False)),
    ("warmup then cosine", lambda o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.01, total_iters=8), S.CosineAnnealingLR(o, T_max=32)], milestones=[8])),
]
print(f"// torch {torch.__version__}")
for label, make in CASES:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = make(opt)
    lrs = []
    for _ in range(N):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    print(f'    ("{label}", &[' + ", ".join(repr(x) for x in lrs) + "]),")
