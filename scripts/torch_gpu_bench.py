"""torch.optim.AdamW on a CUDA GPU, for comparison with `wgpu-optim bench` on the same machine:
device copy bandwidth, then AdamW(fused / foreach) over the workloads the bench runs (one tensor
of 2^20, 2^24, 2^28; GPT-2 124M's 148 tensors; GPT-2 XL's 580). One line per measurement
(time per step, GB/s at 28 B/param, % of copy bandwidth); then torch.optim.Muon on GPT-2's matrix
shapes; then the same as JSON."""
import json
import sys

import torch

dev = "cuda"


def timeit(fn, iters=20, warm=3):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters  # ms


def gpt2_shapes(layers=12, d=768, vocab=50257, ctx=1024):
    s = [(vocab, d), (ctx, d)]
    for _ in range(layers):
        s += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    return s + [(d,), (d,)]


out = {"torch": torch.__version__, "device": torch.cuda.get_device_name()}
x = torch.empty(1 << 28, device=dev)
y = torch.empty_like(x)
ms = timeit(lambda: y.copy_(x))
copy = 2 * x.numel() * 4 / (ms / 1e3) / 1e9
out["copy_GBps"] = copy
print(f"device copy 1 GiB: {ms:.3f} ms  {copy:.0f} GB/s (read + write)")
del x, y


def bench(name, shapes, **kw):
    ps = [torch.nn.Parameter(torch.randn(*s, device=dev)) for s in shapes]
    for p in ps:
        p.grad = torch.randn_like(p)
    opt = torch.optim.AdamW(ps, lr=1e-3, weight_decay=1e-2, **kw)
    n = sum(p.numel() for p in ps)
    ms = timeit(opt.step)
    gbs = 28 * n / (ms / 1e3) / 1e9
    out[name] = {"params": n, "tensors": len(ps), "ms": ms, "GBps": gbs, "copy_fraction": gbs / copy}
    print(f"{name}: {n} params in {len(ps)} tensors: {ms:.3f} ms/step  {gbs:.0f} GB/s  {100 * gbs / copy:.1f}% of copy")
    del opt, ps
    torch.cuda.empty_cache()


for k in (20, 24, 28):
    bench(f"fused 2^{k}", [(1 << k,)], fused=True)
bench("foreach 2^28", [(1 << 28,)], foreach=True)
bench("fused gpt2", gpt2_shapes(), fused=True)
bench("foreach gpt2", gpt2_shapes(), foreach=True)
if "--no-xl" not in sys.argv:
    bench("fused gpt2-xl", gpt2_shapes(48, 1600), fused=True)

# torch.optim.Muon (bf16 Newton-Schulz, a loop over tensors) on GPT-2 124M's block matrices,
# beside cli/examples/muon_step.rs: per shape, and the 48 matrices of one GPT-2 step.
if hasattr(torch.optim, "Muon"):
    muon_total = 0.0
    for rows, cols in [(768, 2304), (768, 768), (768, 3072), (3072, 768)]:
        p = torch.nn.Parameter(torch.randn(rows, cols, device=dev))
        p.grad = torch.randn_like(p)
        opt = torch.optim.Muon([p], lr=0.02)
        ms = timeit(opt.step)
        m, n = min(rows, cols), max(rows, cols)
        gflops = 5 * (4 * m * m * n + 2 * m ** 3) / (ms / 1e3) / 1e9
        out[f"muon {rows}x{cols}"] = {"ms": ms, "GFLOPs": gflops}
        print(f"torch Muon {rows}x{cols}: {ms:.3f} ms/step  {gflops:.0f} GFLOP/s (Newton-Schulz)")
        muon_total += 12 * ms
    out["muon gpt2 block matrices"] = {"ms": muon_total}
    print(f"torch Muon over GPT-2 124M's 48 block matrices: {muon_total:.2f} ms/step")
print("JSON " + json.dumps(out))
