"""Reference values for tests/optax_values.rs, computed by optax itself (JAX on the CPU, f32).

Rebuilds the tests' inputs exactly (the same param/grad functions as
scripts/torch_reference.py), runs eight steps of each configuration and prints the final
parameters as f32 bit patterns, ready to paste into the test. A label ending in `a+b` splits
the 32 values into two tensors of `a` and `b` elements, each with its own trust ratio.
usage: pip install optax; python3 scripts/optax_reference.py
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax

jax.config.update("jax_platform_name", "cpu")
from reference_inputs import N, STEPS, grad, param


CASES = [
    ("lamb", optax.lamb(learning_rate=1e-2)),
    ("lamb wd", optax.lamb(learning_rate=1e-2, weight_decay=0.1, b1=0.8, b2=0.99)),
    ("lamb 20+12", optax.lamb(learning_rate=1e-2)),
    ("lamb wd 20+12", optax.lamb(learning_rate=1e-2, weight_decay=0.1, b1=0.8, b2=0.99)),
    ("lars", optax.lars(learning_rate=1.0)),
    ("lars wd nesterov", optax.lars(learning_rate=0.5, weight_decay=0.01, nesterov=True, trust_coefficient=0.02)),
    ("lars wd nesterov 20+12", optax.lars(learning_rate=0.5, weight_decay=0.01, nesterov=True, trust_coefficient=0.02)),
    ("lars excluded", optax.lars(learning_rate=0.1, trust_ratio_mask=False, momentum=0.5)),
]


def split(x, label):
    last = label.split()[-1]
    if "+" not in last:
        return [x]
    a = int(last.split("+")[0])
    return [x[:a], x[a:]]


print(f"// optax {optax.__version__}, jax {jax.__version__}, CPU, float32; N = {N}, {STEPS} steps")
for label, opt in CASES:
    p = split(jnp.array([param(i) for i in range(N)], dtype=jnp.float32), label)
    state = opt.init(p)
    for k in range(1, STEPS + 1):
        g = split(jnp.array([grad(i, k) for i in range(N)], dtype=jnp.float32), label)
        updates, state = opt.update(g, state, p)
        p = optax.apply_updates(p, updates)
    bits = np.concatenate([np.asarray(t) for t in p]).view(np.uint32)
    print(f'    ("{label}", [' + ", ".join(f"0x{b:08x}" for b in bits) + "]),")
