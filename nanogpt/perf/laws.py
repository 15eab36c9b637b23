"""Chinchilla's scaling laws: the loss fit and compute-optimal sizes of the seed's scaling notebook.

The parameter and FLOP counts these take are nanogpt.config.sizes'; the `scaling` verb that prints
them is nanogpt/perf/scaling.py. No torch, no numpy: `nanogpt scaling` answers instantly."""

from __future__ import annotations
import math
from dataclasses import dataclass
from typing import Any, Optional

from nanogpt.config.sizes import GPT2_VOCAB


GPT2_124M = dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=GPT2_VOCAB)
"""The notebook's `gpt2` config."""


CHINCHILLA_73M = dict(n_layer=10, n_head=10, n_embd=640, block_size=1024, vocab_size=32000)
"""The smallest model of Chinchilla's Table A4 (which uses a 32K vocabulary), as the notebook has it."""


@dataclass(frozen=True)
class LossFit:
    """L(N, D) = E + A / N^alpha + B / D^beta."""

    E: float = 1.69  # entropy of natural text: the loss of an infinite model on infinite data
    A: float = 406.4
    B: float = 410.7
    alpha: float = 0.34
    beta: float = 0.28


CHINCHILLA = LossFit()
"""Chinchilla's approach-3 fit (Hoffmann et al. 2022, eq. 10), the notebook's constants."""


def chinchilla_loss(n_params: float, tokens: float, fit: LossFit = CHINCHILLA) -> float:
    """The loss the fit predicts for a model of `n_params` parameters trained on `tokens` tokens."""
    if n_params <= 0 or tokens <= 0:
        raise ValueError(f"n_params and tokens must be above 0 (got {n_params!r}, {tokens!r})")
    return fit.A / (n_params**fit.alpha) + fit.B / (tokens**fit.beta) + fit.E


@dataclass(frozen=True)
class Optimum:
    """The compute-optimal model size and data size for a FLOPs budget (under C = 6ND)."""

    compute: float
    n_params: float
    tokens: float
    loss: float


def log_grid(start: float, stop: float, step: float) -> list[float]:
    """10**x for x in numpy.arange(start, stop, step): the notebook's grids (equal to numpy's to an ulp)."""
    if step <= 0 or stop <= start:
        raise ValueError(f"need start < stop and step > 0 (got {start}, {stop}, {step})")
    count = math.ceil((stop - start) / step)
    return [10 ** (start + i * step) for i in range(count)]


NOTEBOOK_GRID = (7.0, 11.0, 2**-4)
"""The model-size grid of the notebook's single-budget cell: 10M to 100B, 16 points per decade."""


SWEEP_GRID = (7.0, 14.0, 2**-5)
"""The model-size grid of the notebook's budget sweep: 10M to 10T, 32 points per decade."""


GRIDS = {"notebook": NOTEBOOK_GRID, "sweep": SWEEP_GRID}


GRID_WORDS = {
    "notebook": "the notebook's single-budget grid (10M-100B, 16 sizes per decade)",
    "sweep": "the notebook's sweep grid (10M-10T, 32 sizes per decade)",
}


SWEEP_BUDGETS = (17.0, 26.0, 2**-2)
"""The notebook's budgets: 1e17 to 1e26 FLOPs, 4 per decade (the last is 10**25.75)."""


def compute_optimal(compute: float, grid: tuple[float, float, float] = SWEEP_GRID, fit: LossFit = CHINCHILLA) -> Optimum:
    """The model size on a log grid (and D = C / 6N) with the lowest predicted loss, as the notebook finds it."""
    if compute <= 0:
        raise ValueError(f"compute must be above 0 (got {compute!r})")
    best: Optional[Optimum] = None
    for n in log_grid(*grid):
        d = compute / (6 * n)
        loss = chinchilla_loss(n, d, fit)
        if best is None or loss < best.loss:  # the first of equal losses, as numpy.argmin
            best = Optimum(compute, n, d, loss)
    assert best is not None
    return best


def compute_optimal_exact(compute: float, fit: LossFit = CHINCHILLA) -> Optimum:
    """The continuous optimum of L(N, C/6N): N = G·(C/6)^(beta/(alpha+beta)), G = (alpha·A / (beta·B))^(1/(alpha+beta))."""
    if compute <= 0:
        raise ValueError(f"compute must be above 0 (got {compute!r})")
    g = (fit.alpha * fit.A / (fit.beta * fit.B)) ** (1 / (fit.alpha + fit.beta))
    n = g * (compute / 6) ** (fit.beta / (fit.alpha + fit.beta))
    d = compute / (6 * n)
    return Optimum(compute, n, d, chinchilla_loss(n, d, fit))


def optimal_tokens(n_params: float, fit: LossFit = CHINCHILLA) -> float:
    """The tokens that make `n_params` the compute-optimal size (the inverse of `compute_optimal_exact`)."""
    if n_params <= 0:
        raise ValueError(f"n_params must be above 0 (got {n_params!r})")
    g = (fit.alpha * fit.A / (fit.beta * fit.B)) ** (1 / (fit.alpha + fit.beta))
    half_budget = (n_params / g) ** ((fit.alpha + fit.beta) / fit.beta)  # C / 6
    return half_budget / n_params


def budget_sweep(
    budgets: tuple[float, float, float] = SWEEP_BUDGETS,
    grid: tuple[float, float, float] = SWEEP_GRID,
    fit: LossFit = CHINCHILLA,
) -> list[Optimum]:
    """`compute_optimal` for each budget 10**x, x in arange(*budgets): the notebook's last cell."""
    return [compute_optimal(c, grid, fit) for c in log_grid(*budgets)]


def sweep_line(opt: Optimum) -> str:
    """One row of the sweep exactly as the notebook prints it."""
    return (
        f"compute budget {opt.compute:e}: best model size: {opt.n_params / 1e6:.2f}M, "
        f"best dataset size: {opt.tokens / 1e9:.2f}B"
    )


# ------------------------------------------------------------------ a ladder's loss against compute


@dataclass(frozen=True)
class ComputeFit:
    """L(C) = E + A·C^-alpha, fitted to (compute, loss) points, with the standard errors of log A and
    alpha (from the straight line log(L - E) = log A - alpha·log C at the fitted E)."""

    E: float
    A: float
    alpha: float
    se_log_A: float
    se_alpha: float
    rms_log_error: float
    """The root-mean-square residual of log(L - E): the fit's error, in log space."""

    def loss(self, compute: float) -> float:
        return self.E + self.A * compute ** -self.alpha

    def compute_for(self, loss: float) -> float:
        """The compute at which the fit reaches `loss` (inf at or below E)."""
        return math.inf if loss <= self.E else (self.A / (loss - self.E)) ** (1 / self.alpha)


def fit_compute_law(compute: list[float], loss: list[float], E: Optional[float] = None) -> ComputeFit:
    """Fit L(C) = E + A·C^-alpha in log space: for each E the best A and alpha are a least-squares line
    through (log C, log(L - E)); E (unless given) minimizes that line's residual, by golden-section
    search on [0, min L). Needs three points (four for the errors with E fitted); ValueError otherwise."""
    if len(compute) != len(loss) or len(compute) < (2 if E is not None else 3):
        raise ValueError(f"a fit of L(C) needs at least {2 if E is not None else 3} (compute, loss) points (got {len(compute)})")
    if any(c <= 0 for c in compute) or any(not math.isfinite(x) for x in [*compute, *loss]):
        raise ValueError("compute must be above 0 and every value finite")
    if len(set(compute)) < 2:
        raise ValueError("a fit of L(C) needs at least two different computes")
    xs = [math.log(c) for c in compute]
    fitted_E = E is None

    def line(e: float) -> tuple[float, float, float]:
        """(log A, alpha, sum of squared residuals) for this E."""
        ys = [math.log(x - e) for x in loss]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
        intercept = my - slope * mx
        return intercept, -slope, sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys))

    if E is None:
        # the residual is not unimodal in E (a near-straight log L at E = 0 is a local minimum), so a
        # scan first: E = least - gap, the gap from the whole least loss down to 1e-12 of it, log-spaced
        least = min(loss)
        grid = [least - least * 10 ** (-12 * i / 400) for i in range(401)]
        errors = [line(e)[2] for e in grid]
        # refine every local minimum of the scan (the grid is coarse: the true E may lie between two
        # points whose residuals are both larger than a spurious minimum's), and keep the best
        minima = [i for i in range(len(grid)) if errors[i] <= errors[max(i - 1, 0)] and errors[i] <= errors[min(i + 1, len(grid) - 1)]]
        refined = [_golden_minimum(lambda e: line(e)[2], grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]) for i in minima]
        E = min(refined, key=lambda e: line(e)[2])
    elif E >= min(loss):
        raise ValueError(f"E = {E} must be below every loss (the least is {min(loss)})")
    log_a, alpha, sse = line(E)
    free = len(xs) - 2 - (1 if fitted_E else 0)
    mx = sum(xs) / len(xs)
    sxx = sum((x - mx) ** 2 for x in xs)
    s2 = sse / free if free > 0 else math.nan
    return ComputeFit(E, math.exp(log_a), alpha, math.sqrt(s2 * (1 / len(xs) + mx**2 / sxx)), math.sqrt(s2 / sxx),
                      math.sqrt(sse / len(xs)))


def _golden_minimum(f: Any, lo: float, hi: float) -> float:
    """The x in [lo, hi] where f is least, by golden-section search (f unimodal there)."""
    golden = (math.sqrt(5) - 1) / 2
    a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
    fa, fb = f(a), f(b)
    for _ in range(200):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - golden * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + golden * (hi - lo)
            fb = f(b)
        if hi - lo < 1e-15 * max(1.0, abs(hi)):
            break
    return (lo + hi) / 2
