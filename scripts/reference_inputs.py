"""The inputs every reference script rebuilds, exactly as the tests make them (multiples of
1/512 and 1/1024, exact in f32): N elements, STEPS steps, param(i) and grad(i, k)."""

N, STEPS = 32, 8


def param(i):
    return ((i * 7919 + 13) % 2001 - 1000) / 512.0


def grad(i, k):
    return ((i * 104729 + k * 7717 + 5) % 2001 - 1000) / 1024.0
