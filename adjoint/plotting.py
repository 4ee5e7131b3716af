"""Figures and animations; the only module of the toolkit that imports matplotlib.

Functions take data (arrays, not toolkit objects) and return a matplotlib
:class:`~matplotlib.figure.Figure`.  Figures are made without pyplot, so
nothing here touches global state, opens a window or calls ``show``; save them
with ``figure.savefig(path)``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.animation import FFMpegWriter, FuncAnimation, PillowWriter
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

__all__ = [
    "animate_pendulum",
    "animation_writer",
    "plot_comparison",
    "plot_convergence",
    "plot_fit",
    "plot_states_controls",
]

logger = logging.getLogger(__name__)

# Height of one panel of a states-and-controls figure, in inches.
PANEL_HEIGHT = 1.7
FIGURE_WIDTH = 7.0


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)  # a canvas for savefig and animations, no pyplot
    return figure


# ---- states and controls against time ----


def plot_states_controls(
    t: ArrayLike,
    xs: ArrayLike,
    t_u: ArrayLike,
    us: ArrayLike,
    *,
    control_kind: str = "constant",
    t_end: float | None = None,
    state_names: Sequence[str] | None = None,
    control_names: Sequence[str] | None = None,
    u_lower: ArrayLike | None = None,
    u_upper: ArrayLike | None = None,
    references: dict | None = None,
    title: str | None = None,
    figure: Figure | None = None,
) -> Figure:
    """One panel per state and per control, against time.

    Parameters
    ----------
    t : array_like, shape (N + 1,)
        Times of the states.
    xs : array_like, shape (N + 1, n)
        States ``x_0 … x_N``.
    t_u : array_like, shape (M,)
        Times of the control values: interval starts for piecewise-constant
        controls, nodes for piecewise-linear ones.
    us : array_like, shape (M, m) or (M,)
        Control values.
    control_kind : {'constant', 'linear'}
        Drawn as steps (held until the next start, the last until ``t_end``)
        or as straight lines between nodes.
    t_end : float, optional
        End of the last constant piece (default ``t[-1]``).
    state_names, control_names : sequence of str, optional
        Axis labels (default ``x0, x1, ...`` and ``u0, ...``).
    u_lower, u_upper : array_like of shape (m,), optional
        Control bounds, drawn as dotted lines where finite.
    references : dict, optional
        Extra curves: ``{label: (t, values, panel[, style])}`` where ``panel``
        is a state or control name and ``style`` a dict of keyword arguments
        for ``Axes.plot``; drawn black and dashed by default (an analytic
        optimum, say).
    title : str, optional
    figure : Figure, optional
        Draw into this figure (it must be empty) instead of a new one.

    Returns
    -------
    Figure
    """
    t = np.asarray(t, dtype=np.float64)
    xs = np.asarray(xs, dtype=np.float64)
    if xs.ndim == 1:
        xs = xs[:, None]
    t_u = np.asarray(t_u, dtype=np.float64)
    us = np.asarray(us, dtype=np.float64)
    if us.ndim == 1:
        us = us[:, None]
    if xs.shape[0] != t.size:
        raise ValueError(f"`xs` has {xs.shape[0]} rows but `t` has {t.size} times.")
    if us.shape[0] != t_u.size:
        raise ValueError(f"`us` has {us.shape[0]} rows but `t_u` has {t_u.size} times.")
    if control_kind not in ("constant", "linear"):
        raise ValueError(
            f"`control_kind` must be 'constant' or 'linear'; got {control_kind!r}."
        )
    n, m = xs.shape[1], us.shape[1]
    state_names = list(state_names or [f"x{j}" for j in range(n)])
    control_names = list(control_names or [f"u{j}" for j in range(m)])
    t_end = float(t[-1]) if t_end is None else float(t_end)

    # Panels: states first, then controls, sharing the time axis
    rows = n + m
    if figure is None:
        figure = _new_figure(FIGURE_WIDTH, PANEL_HEIGHT * rows + 0.6)
    axes = figure.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    panels = {}
    for j in range(n):
        ax = axes[j]
        ax.plot(t, xs[:, j], color="C0", label=state_names[j])
        ax.set_ylabel(state_names[j])
        panels[state_names[j]] = ax
    for j in range(m):
        ax = axes[n + j]
        if control_kind == "constant":
            tt = np.append(t_u, t_end)
            uu = np.append(us[:, j], us[-1, j])
            ax.step(tt, uu, where="post", color="C1", label=control_names[j])
        else:
            ax.plot(t_u, us[:, j], color="C1", marker=".", label=control_names[j])
        for bound in (u_lower, u_upper):
            if bound is not None:
                value = np.broadcast_to(np.asarray(bound, dtype=np.float64), (m,))[j]
                if np.isfinite(value):
                    ax.axhline(value, color="0.5", linestyle=":", linewidth=1)
        ax.set_ylabel(control_names[j])
        panels[control_names[j]] = ax

    # Reference curves
    for label, spec in (references or {}).items():
        t_ref, values, panel = spec[:3]
        style = {"color": "k", "linestyle": "--", "linewidth": 1}
        style.update(spec[3] if len(spec) > 3 else {})
        if panel not in panels:
            raise ValueError(
                f"Reference `{label}` names panel {panel!r}; the panels are "
                f"{sorted(panels)}."
            )
        ax = panels[panel]
        ax.plot(t_ref, values, label=label, **style)
        ax.legend(loc="best", fontsize="small")

    for ax in axes:
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel("t")
    if title:
        figure.suptitle(title)
    return figure


# ---- animation ----


def animation_writer(path: str | Path, fps: int):
    """A writer for ``path``: Pillow for ``.gif``, ffmpeg for ``.mp4``.

    Raises
    ------
    RuntimeError
        When the writer the suffix needs is not available; the message says
        what to install or which suffix to use instead.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".gif":
        if not PillowWriter.isAvailable():
            raise RuntimeError(
                "Writing a GIF needs the `pillow` package, which is not installed; "
                "install it (pip install pillow) or save as .mp4 with ffmpeg."
            )
        return PillowWriter(fps=fps)
    if suffix == ".mp4":
        if shutil.which("ffmpeg") is None or not FFMpegWriter.isAvailable():
            raise RuntimeError(
                "Writing an MP4 needs the `ffmpeg` program on PATH, which was not "
                "found; install ffmpeg or save as .gif (needs pillow)."
            )
        return FFMpegWriter(fps=fps)
    raise ValueError(f"`path` must end in .gif or .mp4; got {str(path)!r}.")


def animate_pendulum(
    t: ArrayLike,
    angle: ArrayLike,
    path: str | Path,
    *,
    torque: ArrayLike | None = None,
    length: float = 1.0,
    fps: int = 15,
    max_frames: int = 60,
    dpi: int = 80,
) -> Path:
    """Save an animation of a pendulum swinging through ``angle(t)``.

    The angle is measured from hanging straight down (``angle = π`` is
    upright), so the bob sits at ``(length sin θ, -length cos θ)``.

    Parameters
    ----------
    t : array_like, shape (K,)
    angle : array_like, shape (K,)
    path : str or Path
        Output file, ``.gif`` (Pillow) or ``.mp4`` (ffmpeg).
    torque : array_like, shape (K,), optional
        Shown as a text readout per frame.
    length : float
    fps : int
        Frames per second of the file.
    max_frames : int
        The trajectory is subsampled to at most this many frames (each costs
        one figure render; 60 frames take a few seconds).
    dpi : int
        Resolution of the frames (the figure is 4 inches square).

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    RuntimeError
        When neither writer the suffix needs is available (see
        :func:`animation_writer`).
    """
    t = np.asarray(t, dtype=np.float64)
    angle = np.asarray(angle, dtype=np.float64)
    if t.shape != angle.shape or t.ndim != 1:
        raise ValueError(
            f"`t` and `angle` must be 1-D of one length; got {t.shape} and "
            f"{angle.shape}."
        )
    path = Path(path)
    writer = animation_writer(path, fps)
    frames = np.unique(np.linspace(0, t.size - 1, min(max_frames, t.size)).astype(int))

    # A bare square axes without layout engine or ticks: every frame is drawn
    # twice (advance, then grab), and tick and layout work would dominate.
    figure = Figure(figsize=(4.0, 4.0))
    FigureCanvasAgg(figure)
    ax = figure.add_axes((0.02, 0.02, 0.96, 0.96))
    ax.set_axis_off()
    reach = 1.2 * length
    ax.set_xlim(-reach, reach)
    ax.set_ylim(-reach, reach)
    ax.set_aspect("equal")
    ax.plot([-reach, reach], [0, 0], color="0.85", linewidth=0.8)
    (rod,) = ax.plot([], [], color="k", linewidth=2)
    (bob,) = ax.plot([], [], "o", color="C3", markersize=12)
    (trace,) = ax.plot([], [], color="C0", linewidth=0.8, alpha=0.6)
    label = ax.text(0.02, 0.95, "", transform=ax.transAxes, va="top")
    xb, yb = length * np.sin(angle), -length * np.cos(angle)

    def draw(i):
        rod.set_data([0.0, xb[i]], [0.0, yb[i]])
        bob.set_data([xb[i]], [yb[i]])
        trace.set_data(xb[: i + 1], yb[: i + 1])
        text = f"t = {t[i]:.2f}"
        if torque is not None:
            text += f"\nu = {np.asarray(torque)[i]:+.2f}"
        label.set_text(text)
        return rod, bob, trace, label

    animation = FuncAnimation(figure, draw, frames=frames, blit=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    animation.save(str(path), writer=writer, dpi=dpi)
    logger.info("wrote animation %s (%d frames)", path, len(frames))
    return path


def plot_fit(
    ts: ArrayLike,
    xs: ArrayLike,
    t_obs: ArrayLike,
    y_obs: ArrayLike,
    names: Sequence[str],
    *,
    observed: Sequence[int] | None = None,
    phase: bool = False,
    title: str = "",
    xlabel: str = "t",
    ylabel: str = "",
) -> Figure:
    """Observations as points and the fitted trajectories as lines.

    Parameters
    ----------
    ts : array_like, shape (N + 1,)
    xs : array_like, shape (N + 1, n)
        The fitted trajectory on its integration grid.
    t_obs : array_like, shape (n_obs,)
    y_obs : array_like, shape (n_obs, q)
        Observations of components ``observed`` (default ``0 … q-1``).
    names : sequence of str
        A label per observed column.
    phase : bool
        Add a phase-plane panel of the first two observed components.
    """
    ts, xs = np.asarray(ts), np.asarray(xs)
    t_obs, y_obs = np.asarray(t_obs), np.asarray(y_obs)
    if y_obs.ndim == 1:
        y_obs = y_obs[:, None]
    observed = list(range(y_obs.shape[1])) if observed is None else list(observed)
    fig = Figure(figsize=(11.0 if phase else 7.0, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, width_ratios=[1.6, 1]) if phase else [fig.subplots()]
    ax = axes[0]
    for j, (c, name) in enumerate(zip(observed, names)):
        line = ax.plot(ts, xs[:, c], lw=1.8, label=f"{name} (fit)")[0]
        ax.plot(
            t_obs,
            y_obs[:, j],
            "o",
            ms=4.5,
            color=line.get_color(),
            label=f"{name} (data)",
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False, ncols=2, fontsize="small")
    if title:
        ax.set_title(title)
    if phase:
        c0, c1 = observed[0], observed[1]
        ax = axes[1]
        ax.plot(xs[:, c0], xs[:, c1], lw=1.5, color="0.3", label="fit")
        ax.plot(
            y_obs[:, 0],
            y_obs[:, 1],
            "o-",
            ms=4,
            lw=0.6,
            color="C3",
            alpha=0.8,
            label="data",
        )
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
        ax.set_title("phase plane")
        ax.legend(frameon=False, fontsize="small")
    return fig


# ---- optimiser comparison ----


def plot_comparison(
    labels: Sequence[str],
    histories: Sequence[ArrayLike],
    *,
    fun_best: float | None = None,
    title: str | None = None,
    floor: float = 1e-14,
) -> Figure:
    """Cost against wall time and against forward sweeps, one line per run.

    Parameters
    ----------
    labels : sequence of str
        One label per run (``"L-BFGS-B (adjoint)"``).
    histories : sequence of array_like, shape (n_evaluations, >= 3)
        Per cost evaluation of a run: seconds since its start, forward sweeps
        so far, cost (as :attr:`adjoint.ComparisonRun.history`).
    fun_best : float, optional
        The best cost found, ``J*``.  Given, the panels show the best cost so
        far above it, ``J − J*`` (clipped at ``floor · max(1, |J*|)``), on a
        log scale; otherwise the best cost so far.
    title : str, optional

    Returns
    -------
    Figure
        Two panels: cost against wall time (log) and against forward sweeps
        (log).  Labels of the form ``"METHOD (source)"`` get one colour per
        method and one line style per source (solid: adjoint, thick: with
        Hessian-vector products, dashed: 2-point, dotted: 3-point, dash-dot:
        derivative-free).
    """
    fig = _new_figure(12.0, 4.8)
    ax_time, ax_sweeps = fig.subplots(1, 2, sharey=True)
    relative = fun_best is not None and np.isfinite(fun_best)
    clip = floor * max(1.0, abs(fun_best)) if relative else None
    styles = {
        "(adjoint)": "-",
        "(hvp)": "-",
        "(2-point)": "--",
        "(3-point)": ":",
        "(none)": "-.",
    }
    # One colour per method, one line style per gradient source.
    methods = list(dict.fromkeys(label.rsplit(" (", 1)[0] for label in labels))
    for label, history in zip(labels, histories):
        h = np.asarray(history, dtype=np.float64)
        if h.ndim != 2 or h.shape[0] == 0:
            continue
        best = np.minimum.accumulate(h[:, 2])
        y = np.maximum(best - fun_best, clip) if relative else best
        style = next((v for k, v in styles.items() if label.endswith(k)), "-")
        colour = f"C{methods.index(label.rsplit(' (', 1)[0]) % 10}"
        kw = {
            "lw": 2.2 if label.endswith("(hvp)") else 1.4,
            "ls": style,
            "color": colour,
            "label": label,
            "drawstyle": "steps-post",
        }
        ax_time.plot(np.maximum(h[:, 0], 1e-6), y, **kw)
        ax_sweeps.plot(np.maximum(h[:, 1], 1), y, **kw)
    ylabel = "best cost so far − J*" if relative else "best cost so far"
    ax_time.set(xscale="log", xlabel="wall time [s]", ylabel=ylabel)
    ax_sweeps.set(xscale="log", xlabel="forward sweeps")
    if relative:
        ax_time.set_yscale("log")
    else:
        ax_time.set_yscale("symlog")
    for ax in (ax_time, ax_sweeps):
        ax.grid(True, which="major", alpha=0.3)
    handles, names = ax_sweeps.get_legend_handles_labels()
    if handles:
        fig.legend(
            handles, names, loc="outside right center", frameon=False, fontsize="small"
        )
    if title:
        fig.suptitle(title)
    return fig


# ---- convergence of discrete gradients ----


def plot_convergence(
    dts: Sequence[ArrayLike],
    errors: Sequence[ArrayLike],
    labels: Sequence[str],
    *,
    orders: Sequence[float | None] | None = None,
    title: str | None = None,
    figure: Figure | None = None,
) -> Figure:
    """Gradient error against step size on log-log axes, one line per scheme.

    Parameters
    ----------
    dts : sequence of array_like
        Step sizes of each scheme's runs (as
        :attr:`adjoint.ConvergenceResult.dts`).
    errors : sequence of array_like
        Relative error of the discrete gradient against the continuous
        adjoint's, per run (:attr:`adjoint.ConvergenceResult.errors`).
    labels : sequence of str
        One label per scheme (``"rk4"``).
    orders : sequence of float or None, optional
        Expected order per scheme; a dotted reference line ``∝ dt^q`` is drawn
        through each scheme's first point.
    title : str, optional
    figure : Figure, optional
        Draw into this figure instead of a new one.

    Returns
    -------
    Figure
        One panel: error against ``dt``, both on log scales.
    """
    fig = _new_figure(5.5, 4.2) if figure is None else figure
    ax = fig.subplots()
    orders = [None] * len(labels) if orders is None else list(orders)
    for i, (dt, err, label, q) in enumerate(zip(dts, errors, labels, orders)):
        dt, err = np.asarray(dt, dtype=np.float64), np.asarray(err, dtype=np.float64)
        color = f"C{i % 10}"
        ax.loglog(dt, err, "o-", color=color, lw=1.5, ms=4, label=label)
        if q is not None and dt.size:
            ax.loglog(
                dt,
                err[0] * (dt / dt[0]) ** q,
                ":",
                color=color,
                lw=1.0,
                label=f"∝ dt^{q:g}",
            )
    ax.set_xlabel("step size dt")
    ax.set_ylabel("relative gradient error vs continuous adjoint")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(frameon=False, fontsize="small")
    if title:
        ax.set_title(title)
    return fig
