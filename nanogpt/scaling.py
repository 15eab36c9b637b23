"""Parameters, FLOPs and Chinchilla scaling laws: the seed's scaling_laws.ipynb as a module (the
`scaling` verb is nanogpt/scaling_command.py).

This is the one place that counts a GPT's and a Llama's parameters and FLOPs; the models
(`num_params`, `flops_per_token`), the runner's MFU and the manifest all go through it. It imports neither
torch nor numpy, so `nanogpt scaling` answers instantly.

Three FLOPs accountings live here, each for what it is good at:

- `chinchilla_flops`: Chinchilla's Appendix F count of one training sequence (forward + backward),
  embeddings, attention logits and softmax included, as the notebook computes it.
- `flops_6nd`: the 6ND approximation (Kaplan et al.), which the Chinchilla loss fit assumes.
- `mfu_flops_per_token`: nanoGPT's / PaLM's count behind MFU, 6N + 12·L·H·Q·T (see its docstring).

Names follow the spec (`n_layer`, `n_head`, `n_embd`, `block_size`, `vocab_size`); the notebook
calls them num_layers, num_heads, d_model, seq_len and vocab_size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional


GPT2_VOCAB = 50257
"""GPT-2's BPE vocabulary (50,000 merges + 256 bytes + <|endoftext|>)."""

GPT2_124M = dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=GPT2_VOCAB)
"""The notebook's `gpt2` config."""

CHINCHILLA_73M = dict(n_layer=10, n_head=10, n_embd=640, block_size=1024, vocab_size=32000)
"""The smallest model of Chinchilla's Table A4 (which uses a 32K vocabulary), as the notebook has it."""


# ------------------------------------------------------------------------------ parameters


def params(
    *,
    n_layer: int,
    n_head: int,
    n_embd: int,
    block_size: int,
    vocab_size: int,
    bias: bool = True,
    ffw_size: int = 4,
) -> int:
    """The notebook's parameter count: every parameter except the token and position embeddings.

    Counted: per block the attention's qkv and output projections, the MLP's two matrices, their
    biases and both LayerNorms; then the final LayerNorm and the output head (`vocab_size x n_embd`,
    no bias). This is N in the Chinchilla fit and in 6ND, and it is what nanoGPT's
    `get_num_params()` reports for a weight-tied model: there the head *is* the token embedding, so
    "all parameters minus the position table" equals this count. `bias=False` drops every Linear
    and LayerNorm bias. GPT-2 124M gives 123,653,376. `block_size` and `n_head` do not enter (they
    are taken so that every function here accepts the same sizes).
    """
    _check_sizes(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, vocab_size=vocab_size)
    d = n_embd
    b = 1 if bias else 0
    attention = 3 * d * d + b * 3 * d  # c_attn: q, k, v
    attproj = d * d + b * d  # attn.c_proj
    ffw = d * (ffw_size * d) + b * ffw_size * d  # mlp.c_fc
    ffwproj = ffw_size * d * d + b * d  # mlp.c_proj
    layernorms = 2 * (1 + b) * d  # ln_1, ln_2: weight (and bias)
    ln_f = (1 + b) * d
    dense = d * vocab_size  # lm_head; no bias
    return n_layer * (attention + attproj + ffw + ffwproj + layernorms) + ln_f + dense


def embedding_params(*, n_embd: int, block_size: int, vocab_size: int, tie_weights: bool = True) -> int:
    """Parameters `params` leaves out: the position table, and the token table when it is not tied to the head."""
    return n_embd * block_size + (0 if tie_weights else n_embd * vocab_size)


def model_params(
    *,
    n_layer: int,
    n_head: int,
    n_embd: int,
    block_size: int,
    vocab_size: int,
    bias: bool = True,
    tie_weights: bool = True,
) -> int:
    """Every parameter the model holds, each shared tensor once (GPT-2 124M, tied: 124,439,808)."""
    return params(
        n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, vocab_size=vocab_size, bias=bias
    ) + embedding_params(n_embd=n_embd, block_size=block_size, vocab_size=vocab_size, tie_weights=tie_weights)


def padded_vocab(vocab_size: int, multiple: int) -> int:
    """`vocab_size` rounded up to a multiple of `multiple` when that adds at most 1% rows, else unchanged.

    50257 -> 50304 with 64 (47 rows, 0.09%: the head's matmul gets GPU-friendly shapes); 65 -> 65
    (128 would nearly double the head for nothing).
    """
    if vocab_size < 1 or multiple < 1:
        raise ValueError(f"vocab_size ({vocab_size}) and multiple ({multiple}) must be at least 1")
    rounded = -(-vocab_size // multiple) * multiple
    return rounded if (rounded - vocab_size) * 100 <= vocab_size else vocab_size


def llama_intermediate_size(n_embd: int, multiple_of: int = 256) -> int:
    """The SwiGLU MLP's hidden width as Llama derives it: 2/3 of 4·n_embd, rounded up to `multiple_of`.

    Three matrices of width 8·d/3 hold as many weights as GPT's two of 4·d; Llama 7B: 4096 -> 11008.
    """
    hidden = int(2 * (4 * n_embd) / 3)
    return multiple_of * -(-hidden // multiple_of)


def llama_params(
    *, n_layer: int, n_head: int, n_kv_head: int, n_embd: int, intermediate_size: int, vocab_size: int, **_: Any
) -> int:
    """A Llama's parameters by the same convention as `params`: all but the token embedding.

    Per block the q and o projections (d·d each), k and v (d·n_kv_head·head_size each), the SwiGLU
    MLP's gate, up and down matrices (3·d·intermediate_size) and two RMSNorm weights; then the final
    RMSNorm and the head (`vocab_size x n_embd`). No biases, no position table (RoPE has no
    weights), so with a tied head this is every parameter.
    """
    d = n_embd
    kv = 2 * d * n_kv_head * (d // n_head)
    block = 2 * d * d + kv + 3 * d * intermediate_size + 2 * d
    return n_layer * block + d + d * vocab_size


# ----------------------------------------------------------------------------------- FLOPs


def chinchilla_flops(
    *, n_layer: int, n_head: int, n_embd: int, block_size: int, vocab_size: int, ffw_size: int = 4
) -> int:
    """Training FLOPs of one sequence of `block_size` tokens (forward + backward), Chinchilla Appendix F.

    As the notebook counts: embeddings 2·T·V·d; per layer the qkv projections, the attention logits
    (2·T²·d), the softmax (3·H·T²), the reduction over values (2·T²·d), the output projection and
    the MLP, 2·T·(d·ffw_size + d·ffw_size); the logits 2·T·d·V; backward = 2 x forward (Kaplan et
    al.). Biases and LayerNorms are not counted. GPT-2 124M: 766,006,788,096 per 1024-token sequence.

    Mind `ffw_size`: Appendix F means the MLP's hidden width (4·d_model), but the notebook passes the
    multiplier 4, so its MLP term is d_model times too small, which is one reason its numbers sit
    "off by a bit" from the paper's. The default keeps the notebook's figures; pass
    `ffw_size=4 * n_embd` to count the MLP at its real width (GPT-2 124M: 1,113,446,154,240).
    """
    _check_sizes(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, vocab_size=vocab_size)
    T, d, V, H = block_size, n_embd, vocab_size, n_head
    key_size = d // H
    embeddings = 2 * T * V * d
    attention = 2 * 3 * T * d * (key_size * H)  # key, query, value projections
    attlogits = 2 * T * T * (key_size * H)  # key @ query
    attsoftmax = 3 * H * T * T  # the notebook's "TODO why?": exp, sum and divide, per logit
    attvalue = 2 * T * T * (key_size * H)  # softmax @ value
    attlinear = 2 * T * (key_size * H) * d
    att = attention + attlogits + attsoftmax + attvalue + attlinear
    dense = 2 * T * (d * ffw_size + d * ffw_size)
    logits = 2 * T * d * V
    forward = embeddings + n_layer * (att + dense) + logits
    return 3 * forward  # forward + backward (2 x forward)


def llama_chinchilla_flops(
    *, n_layer: int, n_head: int, n_kv_head: int, n_embd: int, intermediate_size: int, block_size: int, vocab_size: int
) -> int:
    """Training FLOPs of one sequence of a Llama (forward + backward), Chinchilla Appendix F at the
    model's real widths: `chinchilla_flops`' terms with k and v projected to n_kv_head heads and the
    SwiGLU MLP's three matrices (2·T·3·d·intermediate_size); RMSNorms and RoPE are not counted, as
    LayerNorms are not."""
    _check_sizes(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, vocab_size=vocab_size)
    T, d, V, H = block_size, n_embd, vocab_size, n_head
    kv = n_kv_head * (d // H)
    embeddings = 2 * T * V * d
    attention = 2 * T * d * (d + 2 * kv)  # query, key, value projections
    att = attention + 2 * T * T * d + 3 * H * T * T + 2 * T * T * d + 2 * T * d * d  # logits, softmax, values, o_proj
    dense = 2 * T * 3 * d * intermediate_size
    logits = 2 * T * d * V
    return 3 * (embeddings + n_layer * (att + dense) + logits)


def flops_6nd(n_params: float, tokens: float) -> float:
    """Training FLOPs by the 6ND approximation: 2ND forward, 4ND backward."""
    return 6 * n_params * tokens


def mfu_flops_per_token(*, n_params: int, n_layer: int, n_head: int, n_embd: int, block_size: int) -> int:
    """Training FLOPs per token as nanoGPT's `estimate_mfu` and PaLM (Appendix B) count them.

        flops_per_token = 6·N + 12·L·H·Q·T

    N is the model's non-embedding parameter count (`GPT.num_params()`, which equals `params` at
    the model's padded vocabulary: every weight but the position table, the tied head included),
    L = n_layer, H = n_head, Q = n_embd / n_head (so H·Q = n_embd), T = block_size: each token's
    attention is charged for a full context of T positions, as nanoGPT does. 6N is a matmul's
    multiply-add (2) times forward + backward (1 + 2); 12·L·H·Q·T is the attention scores and the
    weighted sum of values, forward and backward. MFU is this times tokens per second, divided by
    the device's peak FLOP/s (`mfu`).
    """
    return 6 * n_params + 12 * n_layer * n_embd * block_size


def mfu(flops_per_token: float, tokens_per_sec: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s by `mfu_flops_per_token` over the peak FLOP/s (both per device or both in all)."""
    if peak_flops <= 0:
        raise ValueError(f"peak_flops must be above 0 (got {peak_flops!r})")
    return flops_per_token * tokens_per_sec / peak_flops


# ---------------------------------------------------------------------- Chinchilla's fit


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


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer (got {value!r})")
    if sizes["n_embd"] % sizes["n_head"]:
        raise ValueError(f"n_embd ({sizes['n_embd']}) must be divisible by n_head ({sizes['n_head']})")


# ------------------------------------------------------------------------------ the verb


@dataclass(frozen=True)
class Arch:
    """The sizes the calculators take, and where they came from."""

    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    vocab_size: int
    bias: bool = True
    tie_weights: bool = True
    pad_vocab_multiple: int = 1
    vocab_note: str = ""

    def sizes(self, vocab_size: Optional[int] = None) -> dict[str, int]:
        return dict(
            n_layer=self.n_layer,
            n_head=self.n_head,
            n_embd=self.n_embd,
            block_size=self.block_size,
            vocab_size=self.vocab_size if vocab_size is None else vocab_size,
        )

    @property
    def padded_vocab_size(self) -> int:
        return padded_vocab(self.vocab_size, self.pad_vocab_multiple)


@dataclass(frozen=True)
class LlamaArch:
    """A Llama's sizes for the calculators (`[model] kind = "llama"`); its vocabulary is never padded."""

    n_layer: int
    n_head: int
    n_kv_head: int
    n_embd: int
    intermediate_size: int
    block_size: int
    vocab_size: int
    tie_embeddings: bool = False
    vocab_note: str = ""

    def sizes(self, vocab_size: Optional[int] = None) -> dict[str, int]:
        return dict(
            n_layer=self.n_layer, n_head=self.n_head, n_kv_head=self.n_kv_head, n_embd=self.n_embd,
            intermediate_size=self.intermediate_size, block_size=self.block_size,
            vocab_size=self.vocab_size if vocab_size is None else vocab_size,
        )

    @property
    def padded_vocab_size(self) -> int:
        return self.vocab_size


@dataclass(frozen=True)
class Training:
    """What a spec's training run consumes."""

    tokens_per_iter: int
    max_iters: int
    eval_only: bool
    init_from: str = "scratch"

    @property
    def tokens(self) -> int:
        return 0 if self.eval_only else self.tokens_per_iter * self.max_iters
