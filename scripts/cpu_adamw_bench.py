"""AdamW on the CPU, back to back on one machine and one thread count: torch's fused
AdamW, DeepSpeed's DeepSpeedCPUAdam (where it is installed and its C++ op builds here) and
this crate's CPU baseline (examples/cpu_adamw.rs, built with
`cargo build --release --example cpu_adamw`), in turn for several rounds (A B C A B C ...),
so that the machine's changing bandwidth touches all alike; medians of each, and memory copy
bandwidth beside them. torch's foreach and for-loop AdamW once, for scale.

usage: cpu_adamw_bench.py [THREADS] [LOG2_N] [ROUNDS]"""
import os
import statistics
import subprocess
import sys
import time

import torch

threads = int(sys.argv[1]) if len(sys.argv) > 1 else os.cpu_count()
log2 = int(sys.argv[2]) if len(sys.argv) > 2 else 26
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
n = 1 << log2
torch.set_num_threads(threads)
print(f"torch {torch.__version__}, {torch.get_num_threads()} threads of {os.cpu_count()} CPUs, one tensor of 2^{log2}")
STEPS = 5  # timed steps per round and side


def timed_steps(step):
    step()  # untimed
    out = []
    for _ in range(STEPS):
        t = time.perf_counter()
        step()
        out.append(time.perf_counter() - t)
    return out


def torch_adamw(**kw):
    p = torch.nn.Parameter(torch.randn(n))
    p.grad = torch.randn(n)
    opt = torch.optim.AdamW([p], lr=1e-3, weight_decay=1e-2, **kw)
    return opt.step


sides = {"torch AdamW(fused=True)": lambda: timed_steps(torch_adamw(fused=True))}
try:
    from deepspeed.ops.adam import DeepSpeedCPUAdam

    def deepspeed():
        p = torch.nn.Parameter(torch.randn(n))
        p.grad = torch.randn(n)
        opt = DeepSpeedCPUAdam([p], lr=1e-3, weight_decay=1e-2, adamw_mode=True)
        return timed_steps(opt.step)

    deepspeed()  # builds the C++ op on first use
    sides["DeepSpeedCPUAdam"] = deepspeed
except Exception as e:  # not installed, or its op does not build here
    print(f"DeepSpeedCPUAdam: not measured ({type(e).__name__}: {e})")

here = os.path.dirname(os.path.abspath(__file__))
# Built here, or copied beside this script by scripts/prepare-gpu-run.sh.
candidates = [os.path.join(here, "..", "target", "release", "examples", "cpu_adamw"), os.path.join(here, "cpu_adamw")]
binary = next((b for b in candidates if os.path.exists(b)), candidates[0])


def ours():
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run([binary, str(log2), str(STEPS)], env=env, check=True, capture_output=True, text=True)
    return [float(line) for line in out.stdout.split()]


if os.path.exists(binary):
    sides["wgpu-optim CPU baseline"] = ours
else:
    print("wgpu-optim CPU baseline: not measured (build it: cargo build --release --example cpu_adamw)")

x = torch.randn(n)
y = torch.empty_like(x)
samples = {name: [] for name in sides}
copies = []
for _ in range(rounds):
    for name, side in sides.items():
        samples[name] += side()
    copies += timed_steps(lambda: y.copy_(x))

copy = 2 * 4 * n / statistics.median(copies) / 1e9
print(f"copy of 2^{log2} floats: {copy:.1f} GB/s (median)")
for name, s in samples.items():
    q = statistics.quantiles(s, n=4)
    gbs = 28 * n / statistics.median(s) / 1e9
    print(f"{name:26} {statistics.median(s) * 1e3:8.2f} ms/step (IQR {q[0] * 1e3:.2f}-{q[2] * 1e3:.2f})  "
          f"{gbs:5.1f} GB/s  {100 * gbs / copy:3.0f}% of copy")
for kw in ({"foreach": True}, {"foreach": False}):
    s = statistics.median(timed_steps(torch_adamw(**kw)))
    print(f"torch AdamW({kw}) {s * 1e3:8.2f} ms/step")
