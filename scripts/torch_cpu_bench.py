"""torch.optim.AdamW on the CPU, for comparison with `wgpu-optim bench` on the same machine and
the same thread count: memory copy bandwidth, then AdamW(fused / foreach / for-loop) on one
tensor of 2^26 parameters. usage: torch_cpu_bench.py [THREADS]"""
import os
import sys
import time

import torch

if len(sys.argv) > 1:
    torch.set_num_threads(int(sys.argv[1]))
print(f"torch {torch.__version__}, {torch.get_num_threads()} threads of {os.cpu_count()} CPUs")


def best(fn, iters=10, warm=2):
    for _ in range(warm):
        fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


n = 1 << 26
x = torch.randn(n)
y = torch.empty_like(x)
s = best(lambda: y.copy_(x))
copy = 2 * 4 * n / s / 1e9
print(f"copy 256 MiB: {s * 1e3:.2f} ms  {copy:.1f} GB/s")
for kw in ({"fused": True}, {"foreach": True}, {"foreach": False}):
    p = torch.nn.Parameter(torch.randn(n))
    p.grad = torch.randn(n)
    opt = torch.optim.AdamW([p], lr=1e-3, weight_decay=1e-2, **kw)
    s = best(opt.step)
    gbs = 28 * n / s / 1e9
    print(f"AdamW {kw}: {s * 1e3:.2f} ms/step  {gbs:.1f} GB/s  {100 * gbs / copy:.0f}% of copy")
