"""Reference values for tests/sparse_adam.rs, from torch.optim.SparseAdam and torch.optim.SGD
on sparse gradients.

A table of ROWS × DIM parameters param(i) (scripts/reference_inputs.py) takes the sparse
gradients of STEPS below: rows (duplicates allowed, summed as torch's coalesce does; one step
with no rows) and values grad(j, k) for the j-th value of step k. Printed per case: the table
and SparseAdam's moments after the last step (none for SGD).
usage: python3 scripts/sparse_adam_reference.py
"""
import torch
from reference_inputs import param, grad

ROWS, DIM = 10, 4
STEPS = [[1, 3, 1, 7], [0, 9], [3, 3, 3], [], [2, 1, 8, 1, 5]]
CASES = [
    ("defaults lr 0.01", torch.optim.SparseAdam, dict(lr=0.01)),
    ("betas maximize eps", torch.optim.SparseAdam, dict(lr=0.05, betas=(0.8, 0.99), maximize=True, eps=1e-3)),
    ("sgd", torch.optim.SGD, dict(lr=0.1)),
    ("sgd maximize", torch.optim.SGD, dict(lr=0.05, maximize=True)),
]


def row(xs):
    return "&[" + ", ".join(repr(float(x)) for x in xs) + "]"


print(f"// torch {torch.__version__}")
for label, make, kwargs in CASES:
    p = torch.nn.Parameter(torch.tensor([param(i) for i in range(ROWS * DIM)], dtype=torch.float32).reshape(ROWS, DIM))
    opt = make([p], **kwargs)
    for k, rows in enumerate(STEPS, start=1):
        values = torch.tensor([grad(j, k) for j in range(len(rows) * DIM)], dtype=torch.float32).reshape(len(rows), DIM)
        indices = torch.tensor([rows], dtype=torch.int64).reshape(1, len(rows))
        p.grad = torch.sparse_coo_tensor(indices, values, (ROWS, DIM))
        opt.step()
    st = opt.state[p]
    m, v = (st["exp_avg"].reshape(-1), st["exp_avg_sq"].reshape(-1)) if "exp_avg" in st else ([], [])
    print(f'    ("{label}", {row(p.detach().reshape(-1))},\n        {row(m)},\n        {row(v)}),')
