"""Converts wgpu-optim checkpoints into a real torch.optim optimizer's state_dict and back,
and checks both directions against torch itself.

    python3 scripts/checkpoint_torch.py to-torch CKPT OUT.pt      # a torch state_dict file
    python3 scripts/checkpoint_torch.py from-torch OUT.pt CKPT BACK  # BACK: CKPT's header, OUT's state
    python3 scripts/checkpoint_torch.py check                      # every optimizer torch has

`check` writes one checkpoint per optimizer with examples/torch_checkpoints.rs (eight steps
on the inputs of scripts/torch_reference.py), converts each into a state_dict, and checks
that it has exactly the state torch's own optimizer keeps after the same eight steps (names,
shapes, `step`, NAdam's `mu_product`; values within the ulps of torch's MKL sqrt) and the
same hyper-parameters, that a fresh torch optimizer accepts it (`load_state_dict`), and that
the state_dict of that optimizer, converted back, loads into wgpu-optim bit for bit.
usage: pip install torch safetensors; python3 scripts/checkpoint_torch.py check
"""
import json
import pathlib
import subprocess
import sys
import tempfile
import zlib

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from reference_inputs import N, STEPS, grad, param

# The configurations examples/torch_checkpoints.rs writes, by label.
TORCH = {
    "sgd": (torch.optim.SGD, dict(lr=0.1, momentum=0.9)),
    "adam": (torch.optim.Adam, dict(lr=1e-2, amsgrad=True)),
    "adamw": (torch.optim.AdamW, dict(lr=1e-2)),
    "nadam": (torch.optim.NAdam, dict(lr=1e-2)),
    "radam": (torch.optim.RAdam, dict(lr=1e-2)),
    "adagrad": (torch.optim.Adagrad, dict(lr=0.1)),
    "rmsprop": (torch.optim.RMSprop, dict(lr=1e-2, centered=True, momentum=0.5)),
    "adamax": (torch.optim.Adamax, dict(lr=1e-2)),
    "adadelta": (torch.optim.Adadelta, dict()),
}



def checksum(meta, tensors):
    """src/checkpoint.rs's checksum: CRC-32 over the metadata but `checksum`, by key, then
    every tensor by name — name, dtype, shape, data — each entry ended by a zero byte."""
    crc = 0
    def field(b):
        nonlocal crc
        crc = zlib.crc32(b + b"\0", crc)
    for k in sorted(k for k in meta if k != "checksum"):
        field(k.encode())
        field(meta[k].encode())
    for name in sorted(tensors):
        t = tensors[name]
        assert t.dtype == torch.float32, f"{name}: {t.dtype}"
        field(name.encode())
        field(b"F32")
        field(",".join(str(d) for d in t.shape).encode())
        field(t.numpy().astype("<f4").tobytes())
    return f"crc32:{crc:08x}"


def to_torch(path):
    """A wgpu-optim checkpoint as a torch optimizer state_dict."""
    with safe_open(path, "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    state = {}
    for key, t in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = t
    param_groups = []
    for g in json.loads(meta["param_groups"]):
        group = dict(g["config"])
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
        group["lr"] = g["lr"]
        group["params"] = g["params"]
        param_groups.append(group)
    return {"state": state, "param_groups": param_groups}


def from_torch(state_dict, template, out):
    """A torch state_dict as a wgpu-optim checkpoint, with `template`'s header (format,
    configuration, tensor lengths, schedule) and the state_dict's learning rates and steps."""
    with safe_open(template, "pt") as f:
        meta = f.metadata()
    tensors = {}
    for index, s in state_dict["state"].items():
        for name, t in s.items():
            if torch.is_tensor(t):
                tensors[f"state.{index}.{name}"] = t.detach().to(torch.float32).contiguous().clone()
    groups = json.loads(meta["param_groups"])
    for g, pg in zip(groups, state_dict["param_groups"]):
        g["lr"] = pg["lr"]
        steps = {float(state_dict["state"][i]["step"]) for i in pg["params"] if "step" in state_dict["state"].get(i, {})}
        if len(steps) == 1:
            g["step"] = int(steps.pop())
    meta["param_groups"] = json.dumps(groups)
    meta["checksum"] = checksum(meta, tensors)
    save_file(tensors, out, metadata=meta)


def torch_run(cls, kw):
    p = torch.nn.Parameter(torch.tensor([param(i) for i in range(N)], dtype=torch.float32))
    opt = cls([p], foreach=False, **kw)
    for k in range(1, STEPS + 1):
        p.grad = torch.tensor([grad(i, k) for i in range(N)], dtype=torch.float32)
        opt.step()
    return opt


def ulps(a, b):
    """Largest distance in f32 ulps between two float32 tensors."""
    ia, ib = a.view(torch.int32).to(torch.int64), b.view(torch.int32).to(torch.int64)
    ia = torch.where(ia < 0, -(ia & 0x7FFFFFFF), ia)
    ib = torch.where(ib < 0, -(ib & 0x7FFFFFFF), ib)
    return int((ia - ib).abs().max()) if a.numel() else 0


def check():
    root = pathlib.Path(__file__).resolve().parent.parent
    example = ["cargo", "run", "--quiet", "--release", "--example", "torch_checkpoints", "--"]
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(example + ["write", d], check=True, cwd=root)
        for label, (cls, kw) in TORCH.items():
            path = f"{d}/{label}.safetensors"
            ours = to_torch(path)
            theirs = torch_run(cls, kw).state_dict()
            a, b = ours["state"][0], theirs["state"][0]
            assert sorted(a) == sorted(b), f"{label}: state {sorted(a)} vs torch's {sorted(b)}"
            worst = 0
            for name in b:
                assert a[name].shape == b[name].shape, f"{label}.{name}: shape {a[name].shape} vs {b[name].shape}"
                assert a[name].dtype == b[name].dtype, f"{label}.{name}: {a[name].dtype} vs {b[name].dtype}"
                worst = max(worst, ulps(a[name], b[name]))
            assert worst <= 64, f"{label}: state differs from torch's by {worst} ulps"
            for key, value in ours["param_groups"][0].items():
                if key != "params":
                    assert key in theirs["param_groups"][0], f"{label}: torch has no hyper-parameter {key}"
                    assert theirs["param_groups"][0][key] == value, f"{label}.{key}: {value} vs torch's {theirs['param_groups'][0][key]}"
            q = torch.nn.Parameter(torch.zeros(N))
            fresh = cls([q], foreach=False, **kw)
            fresh.load_state_dict(ours)
            from_torch(fresh.state_dict(), path, f"{d}/{label}.back.safetensors")
            print(f"{label}: state {sorted(b)} as torch keeps it (within {worst} ulps of torch's own run), "
                  f"{len(ours['param_groups'][0]) - 1} hyper-parameters equal, loaded by {cls.__name__}")
        subprocess.run(example + ["load", d], check=True, cwd=root)


if __name__ == "__main__":
    match sys.argv[1:]:
        case ["check"]:
            check()
        case ["to-torch", ckpt, out]:
            torch.save(to_torch(ckpt), out)
        case ["from-torch", pt, template, out]:
            from_torch(torch.load(pt), template, out)
        case _:
            sys.exit(__doc__)
