"""Compiled loops of the convolution and max-pooling layers.

Every kernel fills arrays the wrapper in :mod:`adjoint._layers` allocated and
checked; none validates its input.  A batch of images is ``(B, C, H, W)``.
The convolution loops only copy and add, so they are complex-safe and run
on ``complex128`` for the complex-step check; Numba compiles and caches one
specialisation per dtype.
"""

from numba import njit

# ---- 2-D convolution as patches times weights ----
# A stride-1 "valid" convolution is a matrix product once the input patches
# are unrolled ("im2col"): y[b, :, i, j] = W_mat @ patch(b, i, j) + bias, with
# W_mat = W.reshape(C_out, C_in·kh·kw).  The unrolling and its transpose (a
# scatter-add, "col2im") are these loops; the products go to BLAS.


@njit(cache=True)
def im2col(x, kh, kw, cols_out):
    """Unroll the ``kh × kw`` patches of ``x`` into rows of ``cols_out``.

    ``cols_out[b, i, j, (c·kh + p)·kw + q] = x[b, c, i + p, j + q]``.
    x : (B, C, H, W); cols_out : (B, H - kh + 1, W - kw + 1, C·kh·kw),
    overwritten.  Complex-safe; no input checks.
    """
    B, C = x.shape[0], x.shape[1]
    Ho, Wo = cols_out.shape[1], cols_out.shape[2]
    for n in range(B):
        for i in range(Ho):
            for j in range(Wo):
                r = 0
                for c in range(C):
                    for p in range(kh):
                        for q in range(kw):
                            cols_out[n, i, j, r] = x[n, c, i + p, j + q]
                            r += 1
    return 0


@njit(cache=True)
def col2im(cols, kh, kw, x_out):
    """Transpose of :func:`im2col`: add each patch entry back to its pixel.

    ``x_out[b, c, i + p, j + q] += cols[b, i, j, (c·kh + p)·kw + q]`` over all
    patches, after zeroing ``x_out``.  cols : (B, Ho, Wo, C·kh·kw);
    x_out : (B, C, Ho + kh - 1, Wo + kw - 1), overwritten.  Complex-safe; no
    input checks.
    """
    B, C = x_out.shape[0], x_out.shape[1]
    Ho, Wo = cols.shape[1], cols.shape[2]
    x_out[...] = 0.0
    for n in range(B):
        for i in range(Ho):
            for j in range(Wo):
                r = 0
                for c in range(C):
                    for p in range(kh):
                        for q in range(kw):
                            x_out[n, c, i + p, j + q] += cols[n, i, j, r]
                            r += 1
    return 0


# ---- 2-D max-pooling (non-overlapping windows) ----


@njit(cache=True)
def maxpool2d_forward(x, size, out, winner_out):
    """Maximum of each ``size × size`` window; the first maximum wins.

    x : (B, C, H, W) float64; out : (B, C, H // size, W // size), overwritten;
    winner_out : same shape, intp, overwritten with the flat offset
    ``p * size + q`` of the winning entry inside its window.  Windows are
    scanned row by row, and a later entry replaces the current winner only
    when it is strictly larger, so of tied entries the first in row-major
    order wins.  Real input only; no input checks.
    """
    B, C = x.shape[0], x.shape[1]
    Ho, Wo = out.shape[2], out.shape[3]
    for n in range(B):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    best = x[n, c, i * size, j * size]
                    arg = 0
                    for p in range(size):
                        for q in range(size):
                            v = x[n, c, i * size + p, j * size + q]
                            if v > best:
                                best = v
                                arg = p * size + q
                    out[n, c, i, j] = best
                    winner_out[n, c, i, j] = arg
    return 0


@njit(cache=True)
def maxpool2d_vjp(y_bar, winner, size, x_bar_out):
    """Route each window's cotangent to its winner; other entries get zero.

    y_bar, winner : (B, C, Ho, Wo); x_bar_out : (B, C, H, W), overwritten.
    No input checks.
    """
    B, C = y_bar.shape[0], y_bar.shape[1]
    Ho, Wo = y_bar.shape[2], y_bar.shape[3]
    x_bar_out[...] = 0.0
    for n in range(B):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    a = winner[n, c, i, j]
                    p = a // size
                    q = a - p * size
                    x_bar_out[n, c, i * size + p, j * size + q] = y_bar[n, c, i, j]
    return 0


@njit(cache=True)
def maxpool2d_jvp(x_dot, winner, size, out):
    """Tangent of max-pooling: each output takes its winner's tangent.

    x_dot : (B, C, H, W); winner, out : (B, C, Ho, Wo); ``out`` is
    overwritten.  No input checks.
    """
    B, C = out.shape[0], out.shape[1]
    Ho, Wo = out.shape[2], out.shape[3]
    for n in range(B):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    a = winner[n, c, i, j]
                    p = a // size
                    q = a - p * size
                    out[n, c, i, j] = x_dot[n, c, i * size + p, j * size + q]
    return 0
