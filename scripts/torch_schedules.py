"""Reference learning rates for tests/schedules.rs, printed by torch.optim.lr_scheduler itself.

Each line: a label and the learning rate used by optimizer steps 0..N-1 (the scheduler is
stepped once after every optimizer step, as when it is stepped per iteration), base lr 0.1.
Then ReduceLROnPlateau: the metric fed after each epoch (METRICS) and, per configuration, the
learning rate after each `step(metric)`.
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
    ("constant", lambda o: S.ConstantLR(o, factor=0.25, total_iters=6)),
    ("polynomial", lambda o: S.PolynomialLR(o, total_iters=30, power=2.0)),
    ("multiplicative", lambda o: S.MultiplicativeLR(o, lr_lambda=lambda k: 0.95)),
    ("cyclic triangular", lambda o: S.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=5, step_size_down=3, cycle_momentum=False)),
    ("cyclic triangular2", lambda o: S.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=4, mode="triangular2", cycle_momentum=False)),
    ("cyclic exp_range", lambda o: S.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=6, mode="exp_range", gamma=0.97, cycle_momentum=False)),
    ("chained constant exponential", lambda o: S.ChainedScheduler([S.ConstantLR(o, factor=0.5, total_iters=4), S.ExponentialLR(o, gamma=0.9)])),
    ("chained linear step", lambda o: S.ChainedScheduler([S.LinearLR(o, start_factor=0.2, total_iters=10), S.StepLR(o, step_size=15, gamma=0.5)])),
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

# A loss that falls, stalls, wobbles and falls again: every branch of ReduceLROnPlateau.
METRICS = [1.0, 0.8, 0.7, 0.7, 0.69995, 0.71, 0.7, 0.65, 0.65, 0.65, 0.65, 0.64, 0.66, 0.66, 0.66, 0.66,
           0.66, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
PLATEAU = [
    ("defaults patience 2", dict(patience=2)),
    ("abs threshold cooldown", dict(patience=1, threshold=0.01, threshold_mode="abs", cooldown=2, factor=0.5)),
    ("max mode min_lr", dict(mode="max", patience=0, factor=0.3, min_lr=0.004)),
    ("max abs eps", dict(mode="max", patience=3, threshold=0.001, threshold_mode="abs", eps=0.02, factor=0.5)),
]
print("    // ReduceLROnPlateau, fed METRICS: the learning rate after each epoch")
print("const METRICS: &[f64] = &[" + ", ".join(repr(x) for x in METRICS) + "];")
for label, kwargs in PLATEAU:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = S.ReduceLROnPlateau(opt, **kwargs)
    lrs = []
    for m in METRICS:
        sched.step(m)
        lrs.append(opt.param_groups[0]["lr"])
    print(f'    ("{label}", &[' + ", ".join(repr(x) for x in lrs) + "]),")

# Momentum cycling: the optimizer's momentum (SGD) or betas[0] (Adam) at each optimizer step.
MOMENTA = [
    ("one cycle sgd momentum", lambda: torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9),
     lambda o: S.OneCycleLR(o, max_lr=0.1, total_steps=N)),
    ("one cycle adam beta1", lambda: torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.1),
     lambda o: S.OneCycleLR(o, max_lr=0.1, total_steps=N, pct_start=0.25, base_momentum=0.8, max_momentum=0.92)),
    ("cyclic sgd momentum", lambda: torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9),
     lambda o: S.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=5, step_size_down=3)),
    ("cyclic triangular2 adam beta1", lambda: torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.1),
     lambda o: S.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=4, mode="triangular2", base_momentum=0.85, max_momentum=0.95)),
]
print("    // momentum cycling: the momentum (or betas[0]) of optimizer steps 0..N-1")
for label, make_opt, make in MOMENTA:
    opt = make_opt()
    sched = make(opt)
    ms = []
    for _ in range(N):
        g = opt.param_groups[0]
        ms.append(g["betas"][0] if "betas" in g else g["momentum"])
        opt.step()
        sched.step()
    print(f'    ("{label}", &[' + ", ".join(repr(x) for x in ms) + "]),")
