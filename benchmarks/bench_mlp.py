"""Forward and backward cost of a tanh MLP: the adjoint Chain against NumPy.

The network is 64 → 5 × (Dense 64 + tanh) → Dense 10 with softmax
cross-entropy, on one batch of all 1797 UCI digits.  Reported, in ms (best
of repeated runs, CPU time, one BLAS thread):

- forward: one forward sweep (states and cost);
- gradient: cost and parameter gradient (one forward and one adjoint sweep),
  through ``Objective.value_and_grad`` and through the chain's sweeps as the
  training loop calls them;
- the same two computations written directly in NumPy, as the baseline;
- gradient / forward, which DESIGN.md asks to keep at most about 3.

Run from the repository root::

    python benchmarks/bench_mlp.py [--repeat 50]

Every state here is an array of about 1 MB, above glibc's mmap threshold, so
each sweep maps fresh memory whose pages fault on first touch; on a virtual
machine that can double the times.  To see the arithmetic alone, let the
allocator keep freed memory::

    MALLOC_MMAP_THRESHOLD_=1000000000 MALLOC_TRIM_THRESHOLD_=1000000000 \
        python benchmarks/bench_mlp.py
"""

from __future__ import annotations

import os

# One core: set before NumPy loads its BLAS.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import adjoint  # noqa: E402
from problems import digits  # noqa: E402

WIDTH = 64
HIDDEN = 5
SEED = 0
# CPU time of this process: on a shared machine, wall time also counts the
# time other processes hold the core.  With one BLAS thread the two agree on
# an idle machine.
CLOCK = time.process_time


def network() -> adjoint.Chain:
    layers = [adjoint.Dense(64, WIDTH), adjoint.Tanh()]
    for _ in range(HIDDEN - 1):
        layers += [adjoint.Dense(WIDTH, WIDTH), adjoint.Tanh()]
    return adjoint.Chain(layers + [adjoint.Dense(WIDTH, 10)])


# ---- the NumPy baseline ----


def numpy_forward(Ws, bs, X, y):
    """Cost of the same network, written out: ``(J, activations)``."""
    hs = [X]
    for W, b in zip(Ws[:-1], bs[:-1]):
        hs.append(np.tanh(hs[-1] @ W.T + b))
    z = hs[-1] @ Ws[-1].T + bs[-1]
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    J = np.mean(lse - z[np.arange(len(y)), y])
    return J, hs, z


def numpy_gradient(Ws, bs, X, y):
    """Cost and gradients of the same network by hand-written backpropagation."""
    J, hs, z = numpy_forward(Ws, bs, X, y)
    B = len(y)
    delta = np.exp(z - z.max(axis=1, keepdims=True))
    delta /= delta.sum(axis=1, keepdims=True)
    delta[np.arange(B), y] -= 1.0
    delta /= B
    gW, gb = [None] * len(Ws), [None] * len(Ws)
    for k in range(len(Ws) - 1, -1, -1):
        gW[k] = delta.T @ hs[k]
        gb[k] = delta.sum(axis=0)
        if k > 0:
            delta = (delta @ Ws[k]) * (1.0 - hs[k] * hs[k])
    return J, gW, gb


# ---- timing ----


def best_ms(fn, repeat):
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = CLOCK()
        fn()
        times.append(CLOCK() - t)
    return 1e3 * float(np.min(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args(argv)

    images, labels, _ = digits.load_digits()
    X = (images.reshape(-1, 64) / 16.0 - 0.3) / 0.4
    y = labels
    net = network()
    params = adjoint.init_params(net, "glorot", seed=SEED)
    bound = net.with_targets(y)
    obj = adjoint.Objective(bound, x0=X, thetas=params, wrt="theta")
    z = obj.z0.copy()
    z_other = z * (1.0 + 1e-12)  # alternate so the cached forward is not reused
    thetas = bound._validate_thetas(params)
    p = np.zeros(0)
    dense = [layer for layer in net.layers if isinstance(layer, adjoint.Dense)]
    Ws = [d.unpack(t)[0] for d, t in zip(dense, thetas[::2])]
    bs = [d.unpack(t)[1] for d, t in zip(dense, thetas[::2])]

    # Same numbers from both routes
    J, g = obj.value_and_grad(z)
    J_np, gW, gb = numpy_gradient(Ws, bs, X, y)
    # Activations have no parameters, so the flat vector is (W, b) per Dense
    g_np = np.concatenate([np.concatenate([w.ravel(), b]) for w, b in zip(gW, gb)])
    err = np.max(np.abs(g - g_np)) / np.max(np.abs(g_np))
    assert abs(J - J_np) < 1e-12 * abs(J_np) and err < 1e-12, (J, J_np, err)

    # Timings
    flip = [z, z_other]
    counter = iter(range(10**9))

    def objective_gradient():
        obj.value_and_grad(flip[next(counter) % 2])

    def chain_forward():
        bound._forward_impl(X, thetas, p)

    def chain_gradient():
        traj = bound._forward_impl(X, thetas, p)
        bound._adjoint_impl(traj, None, 1.0, need_x0_bar=False)

    rows = [
        ("adjoint Chain, forward", best_ms(chain_forward, args.repeat)),
        ("adjoint Chain, value and gradient", best_ms(chain_gradient, args.repeat)),
        (
            "adjoint Objective.value_and_grad",
            best_ms(objective_gradient, args.repeat),
        ),
        (
            "NumPy by hand, forward",
            best_ms(lambda: numpy_forward(Ws, bs, X, y), args.repeat),
        ),
        (
            "NumPy by hand, value and gradient",
            best_ms(lambda: numpy_gradient(Ws, bs, X, y), args.repeat),
        ),
    ]
    print(
        f"MLP 64-({HIDDEN}x{WIDTH} tanh)-10, batch {X.shape[0]}, "
        f"{obj.size} parameters, one BLAS thread; best of {args.repeat} runs"
    )
    for name, ms in rows:
        print(f"  {name:<36} {ms:8.3f} ms")
    t = dict(rows)
    chain_fwd, chain_grad = t["adjoint Chain, forward"], t[rows[1][0]]
    numpy_fwd, numpy_grad = t["NumPy by hand, forward"], t[rows[4][0]]
    print(f"  {'gradient / forward (Chain)':<36} {chain_grad / chain_fwd:8.2f}")
    print(f"  {'gradient / forward (NumPy)':<36} {numpy_grad / numpy_fwd:8.2f}")
    print(f"  {'Chain / NumPy, value and gradient':<36} {chain_grad / numpy_grad:8.2f}")
    print(f"  gradient agrees with NumPy to {err:.1e} (relative)")


if __name__ == "__main__":
    main()
