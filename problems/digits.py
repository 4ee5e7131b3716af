"""Handwritten digits (UCI 8×8): an MLP and a small convolutional network.

Data: the 1797 images of the *Optical Recognition of Handwritten Digits*
data set [1]_ (the UCI test part, as shipped with scikit-learn), 8×8 pixels
with values 0 … 16 (counts of set pixels in 4×4 blocks of 32×32 bitmaps),
labels 0 … 9.  The file ``problems/data/uci_digits_8x8.csv.gz`` keeps its
provenance header; licence CC BY 4.0.

Split (fixed, no random draw): sample ``i`` of the file is a test sample
when ``i % 4 == 3``, giving 1348 training and 449 test images.  Pixels are
scaled by one mean and standard deviation taken over all training pixels.

Models (both :class:`adjoint.Chain` with softmax cross-entropy loss and L2
weight decay ``α/2 ‖W‖²`` on the weights):

- ``'mlp'``: 64 → Dense 128 → ReLU → Dense 10;
- ``'cnn'``: 1×8×8 → Conv 3×3 16 (same) → ReLU → MaxPool 2 → Conv 3×3 32
  (same) → ReLU → MaxPool 2 → Flatten (128) → Dense 10.

Both are trained by Adam on mini-batches from a fixed seed; ``'mlp-lbfgs'``
trains the MLP full-batch by SciPy's L-BFGS-B on the same gradients.

Reference: the issue asks for at least 96 % test accuracy for the MLP and
97 % for the CNN, each in under two minutes on one core; ``REFERENCE`` holds
those thresholds and the tests check them.  Measured with the settings
below (seed 0): MLP 98.0 %, CNN 98.7 %, in about 2 s and 6 s on one core.

References
----------
.. [1] E. Alpaydin and C. Kaynak, "Optical Recognition of Handwritten
   Digits", UCI Machine Learning Repository, 1998, dataset 80,
   https://archive.ics.uci.edu/dataset/80 (CC BY 4.0).
"""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

import adjoint
from adjoint import (
    Adam,
    Chain,
    Conv2D,
    DataError,
    Dense,
    Flatten,
    MaxPool2D,
    ReLU,
    Tanh,
)

DESCRIPTION = "UCI 8×8 handwritten digits: an MLP and a small CNN trained by Adam"

DATA_FILE = "uci_digits_8x8.csv.gz"
N_PIXELS = 64
N_CLASSES = 10
MAX_PIXEL = 16  # pixel values are counts 0 … 16
TEST_EVERY = 4  # sample i is a test sample when i % TEST_EVERY == TEST_EVERY - 1
SEED = 0  # initial weights and mini-batch order

# Training settings per method (measured: each well under 20 s on one core)
SETTINGS = {
    "mlp": {
        "epochs": 40,
        "batch_size": 32,
        "learning_rate": 3e-3,
        "learning_rate_decay": 0.93,
        "weight_decay": 1e-3,
        "init": "he",
    },
    "cnn": {
        "epochs": 20,
        "batch_size": 32,
        "learning_rate": 3e-3,
        "learning_rate_decay": 0.9,
        "weight_decay": 1e-3,
        "init": "he",
    },
    "mlp-lbfgs": {"maxiter": 300, "weight_decay": 1e-3, "init": "he"},
}
METHODS = tuple(SETTINGS)

REFERENCE = {
    "source": "acceptance thresholds of the digits problem (issue 5)",
    "mlp_test_accuracy": 0.96,
    "cnn_test_accuracy": 0.97,
    "max_seconds": 120.0,
}


# ---- data ----


def load_digits(path=None):
    """Read the digits table: ``(images, labels, header)``.

    Parameters
    ----------
    path : str or path-like, optional
        A CSV file (optionally ``.gz``) with ``#`` comment lines, a header row
        and 65 columns per row: 64 pixel values 0 … 16 in row-major order and
        the digit.  Default: the bundled file.

    Returns
    -------
    images : ndarray, shape (n, 8, 8), float64
    labels : ndarray, shape (n,), intp
    header : list of str
        The comment lines (provenance).

    Raises
    ------
    DataError
        Naming the file, the line and the column of a bad value.
    """
    if path is None:
        text = (resources.files(__package__) / "data" / DATA_FILE).read_bytes()
        name = DATA_FILE
    else:
        path = Path(path)
        name = str(path)
        try:
            text = path.read_bytes()
        except OSError as err:
            raise DataError(f"{name}: cannot be read ({err.strerror}).") from err
    if name.endswith(".gz"):
        try:
            text = gzip.decompress(text)
        except OSError as err:
            raise DataError(f"{name}: not a gzip file ({err}).") from err
    lines = io.StringIO(text.decode("utf-8"))

    header, rows, columns = [], [], None
    for lineno, row in enumerate(csv.reader(lines), start=1):
        if not row or not "".join(row).strip():
            continue
        if row[0].lstrip().startswith("#"):
            header.append(",".join(row).lstrip()[1:].strip())
            continue
        if columns is None:
            columns = [c.strip() for c in row]
            if len(columns) != N_PIXELS + 1:
                raise DataError(
                    f"{name}, line {lineno}: the header names {len(columns)} "
                    f"columns; a digits table has {N_PIXELS} pixels and the digit."
                )
            continue
        if len(row) != N_PIXELS + 1:
            raise DataError(
                f"{name}, line {lineno}: {len(row)} values; expected "
                f"{N_PIXELS + 1} (64 pixels and the digit)."
            )
        try:
            values = [int(v) for v in row]
        except ValueError:
            j = next(
                j for j, v in enumerate(row) if not v.strip().lstrip("-").isdigit()
            )
            raise DataError(
                f"{name}, line {lineno}, column '{columns[j]}': {row[j]!r} is not "
                "a whole number."
            ) from None
        for j, v in enumerate(values):
            top = MAX_PIXEL if j < N_PIXELS else N_CLASSES - 1
            if not 0 <= v <= top:
                raise DataError(
                    f"{name}, line {lineno}, column '{columns[j]}': {v} is outside "
                    f"0 … {top}."
                )
        rows.append(values)
    if not rows:
        raise DataError(f"{name}: no data rows.")
    table = np.array(rows, dtype=np.float64)
    images = table[:, :N_PIXELS].reshape(-1, 8, 8)
    labels = table[:, N_PIXELS].astype(np.intp)
    return images, labels, header


@dataclass
class DigitsProblem:
    """Training and test sets, scaled, with the raw test images for plots.

    ``X_train`` and ``X_test`` are (n, 64); :meth:`inputs` reshapes them to
    (n, 1, 8, 8) for the convolutional network.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    images_test: np.ndarray
    pixel_mean: float
    pixel_std: float
    header: list = field(default_factory=list)

    def inputs(self, model: str, part: str = "train") -> np.ndarray:
        X = self.X_train if part == "train" else self.X_test
        return X.reshape(-1, 1, 8, 8) if model == "cnn" else X


def build(data=None) -> DigitsProblem:
    """The problem on the bundled data, or on the CSV file ``data``."""
    images, labels, header = load_digits(data)
    n = labels.size
    test = np.arange(n) % TEST_EVERY == TEST_EVERY - 1
    X = images.reshape(n, N_PIXELS) / MAX_PIXEL
    mean = float(X[~test].mean())
    std = float(X[~test].std())
    if std == 0:
        raise DataError("The training images are all equal; nothing to learn.")
    X = (X - mean) / std
    return DigitsProblem(
        X[~test], labels[~test], X[test], labels[test], images[test], mean, std, header
    )


# ---- models ----


def mlp(weight_decay: float = SETTINGS["mlp"]["weight_decay"]) -> Chain:
    """64 → Dense 128 → ReLU → Dense 10."""
    return Chain(
        [Dense(N_PIXELS, 128), ReLU(), Dense(128, N_CLASSES)], weight_decay=weight_decay
    )


def cnn(weight_decay: float = SETTINGS["cnn"]["weight_decay"]) -> Chain:
    """Two 3×3 convolutions with ReLU and 2×2 max-pooling, then Dense 10."""
    return Chain(
        [
            Conv2D(1, 16, 3, padding="same"),
            ReLU(),
            MaxPool2D(2),
            Conv2D(16, 32, 3, padding="same"),
            ReLU(),
            MaxPool2D(2),
            Flatten(),
            Dense(32 * 2 * 2, N_CLASSES),
        ],
        input_shape=(1, 8, 8),
        weight_decay=weight_decay,
    )


def model(method: str) -> Chain:
    """The network a method trains."""
    _check_method(method)
    if method == "cnn":
        return cnn(SETTINGS["cnn"]["weight_decay"])
    return mlp(SETTINGS[method]["weight_decay"])


def _check_method(method):
    if method not in METHODS:
        raise ValueError(
            f"`method` must be one of {', '.join(repr(m) for m in METHODS)}; "
            f"got {method!r}."
        )


def initial_guess(problem=None, method: str = "mlp", *, seed=SEED) -> list:
    """Initial parameters of the method's network (fixed seed)."""
    return adjoint.init_params(model(method), SETTINGS[method]["init"], seed=seed)


# ---- solve ----


def solve(
    problem: DigitsProblem,
    method: str | None = None,
    progress=None,
    *,
    seed=SEED,
    epochs: int | None = None,
):
    """Train the network of ``method`` ('mlp', 'cnn' or 'mlp-lbfgs').

    Parameters
    ----------
    problem : DigitsProblem
    method : str, optional
        Default ``'mlp'``.
    progress : None, True or callable
        Called once per epoch (L-BFGS: per iteration); see
        :func:`adjoint.train`.
    seed : int
        Seed of the initial weights and the mini-batch order.
    epochs : int, optional
        Override the number of epochs (or L-BFGS iterations), e.g. for a
        quick demonstration.

    Returns
    -------
    scipy.optimize.OptimizeResult
        That of :func:`adjoint.train` (or :func:`adjoint.train_lbfgs`), with
        ``method`` and ``model`` the method's name, plus ``optimiser``,
        ``test_accuracy``, ``test_predictions``, ``misclassified``
        (indices into the test set), ``table`` and ``to_json()``.
    """
    method = method or "mlp"
    _check_method(method)
    settings = SETTINGS[method]
    net = model(method)
    params = adjoint.init_params(net, settings["init"], seed=seed)
    X, X_test = problem.inputs(method, "train"), problem.inputs(method, "test")
    validation = (X_test, problem.y_test)

    if method == "mlp-lbfgs":
        maxiter = settings["maxiter"] if epochs is None else epochs
        result = adjoint.train_lbfgs(
            net,
            params,
            X,
            problem.y_train,
            maxiter=maxiter,
            validation=validation,
            progress=progress,
        )
    else:
        result = adjoint.train(
            net,
            params,
            X,
            problem.y_train,
            optimiser=Adam(settings["learning_rate"]),
            epochs=settings["epochs"] if epochs is None else epochs,
            batch_size=settings["batch_size"],
            seed=seed,
            validation=validation,
            progress=progress,
            learning_rate_decay=settings["learning_rate_decay"],
        )

    # Test-set evaluation and the report
    out = net.predict(X_test, result.params)
    pred = np.argmax(out, axis=1)
    result.optimiser = result.method  # 'adam' or 'l-bfgs-b'
    result.method = result.model = method
    result.chain = net
    result.test_predictions = pred
    result.test_accuracy = float(np.mean(pred == problem.y_test))
    result.misclassified = np.flatnonzero(pred != problem.y_test)
    result.table = [
        ("test accuracy", result.test_accuracy, None),
        ("training accuracy", result.accuracy, None),
        ("training cost J", float(result.fun), None),
        ("misclassified test digits", int(result.misclassified.size), None),
        ("parameters", int(result.x.size), None),
        ("training time (s)", float(result.wall_time), None),
    ]
    result.to_json = lambda: {
        "model": method,
        "test_accuracy": result.test_accuracy,
        "training_accuracy": result.accuracy,
        "history": {k: v.tolist() for k, v in result.history.items()},
        "misclassified": result.misclassified.tolist(),
    }
    return result


# ---- plot ----

MAX_SHOWN = 24  # misclassified digits shown in the grid


def plot(problem: DigitsProblem, result, *, max_shown: int = MAX_SHOWN):
    """Learning curves and a grid of misclassified test digits.

    Left: training and test loss (log scale) and accuracy per epoch.  Right:
    up to ``max_shown`` misclassified test images, titled "true → predicted".
    Returns the matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig = plt.figure(figsize=(11, 5), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[1.1, 1])
    ax_loss, ax_acc = left.subplots(2, 1, sharex=True)
    h = result.history
    ax_loss.semilogy(h["epoch"], h["loss"], label="training (epoch mean, with decay)")
    ax_loss.semilogy(h["epoch"], h["val_loss"], label="test")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.legend()
    ax_acc.plot(h["epoch"], h["accuracy"], label="training")
    ax_acc.plot(h["epoch"], h["val_accuracy"], label="test")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_xlabel("iteration" if result.model == "mlp-lbfgs" else "epoch")
    ax_acc.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_acc.legend(loc="lower right")
    left.suptitle(f"{result.model}: test accuracy {result.test_accuracy:.1%}")

    wrong = np.asarray(result.misclassified)[:max_shown]
    right.suptitle(f"misclassified test digits ({len(result.misclassified)})")
    if wrong.size == 0:
        ax = right.subplots()
        ax.text(0.5, 0.5, "none", ha="center", va="center")
        ax.set_axis_off()
        return fig
    ncols = 6
    nrows = int(np.ceil(max(wrong.size, ncols) / ncols))
    axes = np.atleast_1d(right.subplots(nrows, ncols)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, i in zip(axes, wrong):
        ax.imshow(problem.images_test[i], cmap="gray_r", vmin=0, vmax=MAX_PIXEL)
        ax.set_title(
            f"{problem.y_test[i]} → {result.test_predictions[i]}",
            fontsize=9,
        )
    return fig


# ---- checks ----


class CheckReport:
    """Gradient reports of the digits networks; ``passed`` when all passed."""

    def __init__(self, reports: dict):
        self.reports = reports

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.reports.values())

    def __str__(self) -> str:
        return "\n".join(f"{name}:\n{report}" for name, report in self.reports.items())


def check(problem: DigitsProblem, *, n_samples: int = 8) -> CheckReport:
    """Gradient checks of both networks on ``n_samples`` training images.

    ReLU and max-pooling are not complex-analytic, so the MLP and CNN are
    checked by central differences, Taylor remainders and the dot-product
    test; a tanh variant of the MLP is also checked by complex step.

    Their cost is only piecewise smooth: a Taylor step that crosses a kink
    (a ReLU input or a max-pool race changing sign) spoils that direction's
    orders.  The Taylor test is then repeated in up to ``TAYLOR_RETRIES``
    further random directions and passes when one shows order 2; a wrong
    gradient gives order 1 in every direction.
    """
    y = problem.y_train[:n_samples]
    smooth = Chain(
        [Dense(N_PIXELS, 32), Tanh(), Dense(32, N_CLASSES)], weight_decay=1e-3
    )
    cases = {
        "mlp (ReLU)": (mlp(), "he", problem.inputs("mlp")[:n_samples]),
        "cnn (ReLU, max-pool)": (cnn(), "he", problem.inputs("cnn")[:n_samples]),
        "mlp (tanh), complex step": (
            smooth,
            "glorot",
            problem.inputs("mlp")[:n_samples],
        ),
    }
    reports = {}
    for name, (net, scheme, X) in cases.items():
        params = adjoint.init_params(net, scheme, seed=SEED)
        obj = adjoint.Objective(net.with_targets(y), x0=X, thetas=params, wrt="theta")
        report = adjoint.check_gradients(obj, jacobian=False)
        _retry_taylor(obj, report)
        reports[name] = report
    return CheckReport(reports)


TAYLOR_RETRIES = 3
TAYLOR_LINE = "Taylor remainder orders"


def _retry_taylor(obj, report):
    """Repeat a failed Taylor test of a piecewise-smooth chain in new directions."""
    if all(layer.complex_analytic for layer in obj.seq.layers):
        return
    k = next(i for i, line in enumerate(report.lines) if line[0] == TAYLOR_LINE)
    if report.lines[k][3]:
        return
    lo, hi = 1.9, 2.1
    for attempt in range(1, TAYLOR_RETRIES + 1):
        rng = np.random.default_rng(100 + attempt)
        taylor = adjoint.taylor_test(obj, obj.z0, rng=rng)
        ok = bool(np.all((taylor.orders >= lo) & (taylor.orders <= hi)))
        if ok:
            break
    report.lines[k] = (
        f"Taylor orders, direction {attempt + 1}",
        taylor.orders,
        f"in [{lo}, {hi}]",
        ok,
    )
    report.taylor = taylor
