"""Parameters, FLOPs and Chinchilla scaling laws: the seed's scaling_laws.ipynb as a module and a verb.

This is the one place that counts a GPT's parameters and FLOPs; the model (`GPT.num_params`,
`GPT.flops_per_token`), the runner's MFU and the manifest all go through it. It imports neither
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

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from nanogpt.errors import InputError

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
class Training:
    """What a spec's training run consumes."""

    tokens_per_iter: int
    max_iters: int
    eval_only: bool
    init_from: str = "scratch"

    @property
    def tokens(self) -> int:
        return 0 if self.eval_only else self.tokens_per_iter * self.max_iters


class _UsageError(InputError):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that raises InputError (exit 2) with the usage line instead of calling sys.exit."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        raise _UsageError(f"usage error: {self.prog}: {message}")

    def exit(self, status: int = 0, message: Optional[str] = None):  # --help
        if message:
            sys.stderr.write(message)
        raise _HelpShown(status)


class _HelpShown(Exception):
    def __init__(self, status: int):
        self.status = status


def _quantity(text: str) -> float:
    """A positive number, with an optional K/M/B/T suffix: 1.92e19, 124M, 300B."""
    scale = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
    s = text.strip()
    factor = 1.0
    if s and s[-1].lower() in scale:
        factor = scale[s[-1].lower()]
        s = s[:-1]
    try:
        value = float(s) * factor
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (e.g. 1.92e19, 124M, 300B)") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _build_parser() -> tuple[_Parser, dict[str, _Parser]]:
    from nanogpt.cli import EPILOG

    p = _Parser(
        prog="nanogpt scaling",
        description="The seed's scaling-law notebook: parameters, FLOPs, Chinchilla loss and compute-optimal sizes.",
    )
    sub = p.add_subparsers(dest="what", metavar="{params,flops,memory,optimal,loss}", parser_class=_Parser)
    sub.required = True
    subs: dict[str, _Parser] = {}
    for name, help_text in (
        ("params", "parameter counts of a spec's model or of explicit sizes"),
        ("flops", "FLOPs per token and per sequence (Chinchilla Appendix F, 6N, MFU's 6N+12LHQT)"),
    ):
        s = subs[name] = sub.add_parser(name, help=help_text, description=help_text, epilog=EPILOG)
        s.add_argument("words", nargs="*", metavar="SPEC [key=value ...]", help="a spec and its overrides")
        s.add_argument("--n-layer", type=_positive_int, metavar="L")
        s.add_argument("--n-head", type=_positive_int, metavar="H")
        s.add_argument("--n-embd", type=_positive_int, metavar="C")
        s.add_argument("--block-size", type=_positive_int, metavar="T")
        s.add_argument("--vocab-size", type=_positive_int, metavar="V", help=f"default {GPT2_VOCAB} (GPT-2's)")
        s.add_argument("--no-bias", action="store_true", help="no biases in Linear and LayerNorm layers")
        s.add_argument("--untied", action="store_true", help="output head separate from the token embedding")
        s.add_argument("--pad-vocab-multiple", type=_positive_int, default=64, metavar="M",
                       help="pad the vocabulary to a multiple of M when that adds at most 1%% rows (default 64)")
        s.add_argument("--json", action="store_true", help="print the figures as JSON")
    help_text = "bytes per process (params, grads, optimizer, activations) under ddp and fsdp, and what fits"
    s = subs["memory"] = sub.add_parser("memory", help=help_text, description=help_text + (
        ". Activations are one micro-batch's (train.batch_size sequences of block_size), with and without "
        "activation checkpointing; 16-bit compute unless system.dtype = 'float32'."), epilog=EPILOG)
    s.add_argument("words", nargs="*", metavar="SPEC [key=value ...]", help="a spec and its overrides")
    s.add_argument("--world-size", type=_positive_int, default=1, metavar="N", help="processes in the job (default 1)")
    s.add_argument("--device-memory", type=_memory_size, metavar="SIZE", help="memory of one device, e.g. 80GB or 141GiB: say which rows fit")
    s.add_argument("--json", action="store_true", help="print the figures as JSON")
    s = subs["optimal"] = sub.add_parser("optimal", help="compute-optimal model and data size for a FLOPs budget")
    s.add_argument("--compute", type=_quantity, action="append", metavar="C", help="FLOPs budget (repeatable), e.g. 1.92e19")
    s.add_argument("--sweep", action="store_true", help="the notebook's sweep of budgets 1e17..1e26 (4 per decade)")
    s.add_argument("--grid", choices=["sweep", "notebook"], default=None,
                   help="model-size grid: 'notebook' (10M-100B, 16/decade, the single-budget cell) or 'sweep' "
                        "(10M-10T, 32/decade); default: notebook for --compute, sweep for --sweep")
    s.add_argument("--json", action="store_true", help="print the figures as JSON")
    s = subs["loss"] = sub.add_parser("loss", help="Chinchilla's predicted loss L(N, D)")
    s.add_argument("--params", type=_quantity, required=True, metavar="N", help="parameters, e.g. 124M")
    s.add_argument("--tokens", type=_quantity, required=True, metavar="D", help="training tokens, e.g. 300B")
    s.add_argument("--json", action="store_true", help="print the figures as JSON")
    return p, subs


def scaling_command(argv: Sequence[str]) -> int:
    """`nanogpt scaling params|flops|optimal|loss ...`: print tables (or --json). Exit 0; usage errors raise InputError."""
    from nanogpt.cli import parse_words

    top, subs = _build_parser()
    argv = list(argv)
    try:
        if argv[:1] and argv[0] in subs:  # a spec and overrides anywhere among the flags
            args = parse_words(subs[argv[0]], argv[1:])
            args.what = argv[0]
        else:
            args = top.parse_args(argv)
    except _HelpShown as shown:
        return shown.status
    parser = subs[args.what]
    if args.what in ("params", "flops"):
        arch, training, source = _arch_from_args(args, parser)
        report = _model_report(arch, training)
        if args.json:
            _print_json({"source": source, **report})
        else:
            print(_model_table(args.what, arch, training, source, report))
    elif args.what == "memory":
        _memory_command(args, parser)
    elif args.what == "optimal":
        if not args.compute and not args.sweep:
            parser.error("optimal needs --compute C or --sweep")
        rows: list[Optimum] = []
        grids: list[str] = []  # the grid each row's N is the best of
        if args.sweep:
            grid = args.grid or "sweep"
            rows += budget_sweep(grid=GRIDS[grid])
            grids += [grid] * (len(rows) - len(grids))
        for c in args.compute or ():
            grid = args.grid or "notebook"
            rows.append(compute_optimal(c, GRIDS[grid]))
            grids.append(grid)
        exact = [compute_optimal_exact(r.compute) for r in rows]
        if args.json:
            _print_json(
                [
                    {"compute": r.compute, "n_params": r.n_params, "tokens": r.tokens, "loss": r.loss, "grid": g,
                     "exact": asdict(e)}
                    for r, g, e in zip(rows, grids, exact)
                ]
            )
        else:
            print(_optimal_table(rows, exact, grids))
    else:
        n, d = args.params, args.tokens
        loss = chinchilla_loss(n, d)
        d_opt = optimal_tokens(n)
        report = {
            "n_params": n,
            "tokens": d,
            "loss": loss,
            "compute_6nd": flops_6nd(n, d),
            "optimal_tokens": d_opt,
            "training_factor": d / d_opt,
            "optimal_at_same_compute": asdict(compute_optimal_exact(flops_6nd(n, d))),
        }
        if args.json:
            _print_json(report)
        else:
            opt = report["optimal_at_same_compute"]
            rows = [
                ("parameters N", _si(n)),
                ("tokens D", _si(d)),
                ("predicted loss L(N, D)", f"{loss:.4f}  (E + A/N^alpha + B/D^beta, Chinchilla's fit)"),
                ("compute 6ND", f"{report['compute_6nd']:.3e} FLOPs"),
                ("compute-optimal D for N", f"{_si(d_opt)} tokens ({d_opt / n:.1f} per parameter)"),
                ("vs compute-optimal", _verdict(d / d_opt)),
                ("optimum at this compute", f"N = {_si(opt['n_params'])}, D = {_si(opt['tokens'])}, loss {opt['loss']:.4f}"),
            ]
            print(_table(rows))
    return 0


def fit_warning(exp: Any, path: str) -> str | None:
    """What `check` says when the spec as written (DDP, no activation checkpointing) will not fit
    the GPU nvidia-smi finds; None when it fits, when there is no GPU, or the spec is not a GPT's."""
    from nanogpt import memory

    if exp.system.device != "auto" and not exp.system.device.startswith("cuda"):
        return None
    gpu = memory.smallest_gpu()
    if gpu is None:
        return None
    try:
        arch = _arch_of(exp, path)
    except InputError:  # not a GPT, or a vocabulary that is not known before prepare: nothing to say
        return None
    usage = memory.plan(
        memory.GPTSizes(
            n_layer=arch.n_layer, n_head=arch.n_head, n_embd=arch.n_embd, block_size=arch.block_size,
            vocab_size=arch.padded_vocab_size, bias=arch.bias, tie_weights=arch.tie_weights, dropout=exp.model.dropout,
        ),
        batch=exp.train.batch_size, world_size=1, half=exp.system.dtype != "float32", checkpointing=False,
    )["ddp"]
    name, capacity = gpu
    if usage.total <= capacity:
        return None
    return (
        f"{path}: needs about {memory.human(usage.total)} per process (activations of train.batch_size = "
        f"{exp.train.batch_size}: {memory.human(usage.activations)}), more than the {memory.human(capacity)} of "
        f"this machine's {name}; `nanogpt scaling memory {path}` shows what a smaller batch, fsdp or "
        "activation checkpointing would need"
    )


def _memory_size(text: str) -> int:
    from nanogpt.memory import parse_size

    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _memory_command(args: argparse.Namespace, parser: _Parser) -> None:
    import attrs

    from nanogpt import memory

    exp, path = _load_one_spec(args.words, [], parser)
    arch = _arch_of(exp, path)
    sizes = memory.GPTSizes(
        n_layer=arch.n_layer, n_head=arch.n_head, n_embd=arch.n_embd, block_size=arch.block_size,
        vocab_size=arch.padded_vocab_size, bias=arch.bias, tie_weights=arch.tie_weights, dropout=exp.model.dropout,
    )
    half = exp.system.dtype != "float32"
    batch = exp.train.batch_size
    rows = []
    for checkpointing in (False, True):
        plans = memory.plan(sizes, batch=batch, world_size=args.world_size, half=half, checkpointing=checkpointing)
        rows += [(u, checkpointing) for u in plans.values()]
    fits = args.device_memory
    if args.json:
        _print_json({
            "source": path, "world_size": args.world_size, "micro_batch": batch, "block_size": arch.block_size,
            "vocab_size": arch.padded_vocab_size, "precision": "16-bit" if half else "float32", "device_memory": fits,
            "rows": [
                {**u.as_dict(), "activation_checkpointing": "blocks" if ck else "none",
                 **({} if fits is None else {"fits": u.total <= fits})}
                for u, ck in rows
            ],
        })
        return
    processes = f"{args.world_size} process" + ("es" if args.world_size > 1 else "")
    print(f"{path}: {arch.n_layer} x {arch.n_embd}, block {arch.block_size}, vocab {arch.padded_vocab_size}; micro-batch "
          f"{batch} x {arch.block_size} tokens; {'16-bit' if half else 'float32'} compute; AdamW; {processes}")
    named = [attrs.evolve(u, parallel=u.parallel + (" + ckpt" if ck else "")) for u, ck in rows]
    print("\n".join(memory.table(named, fits)))
    print("bytes per process (under fsdp rank 0's, the largest shard); ckpt: system.activation_checkpointing = "
          "\"blocks\", each block recomputed in the backward")


def _arch_from_args(args: argparse.Namespace, parser: _Parser) -> tuple[Arch, Optional[Training], str]:
    explicit = {k: getattr(args, k) for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")}
    if args.words or args.specs:
        given = [f"--{k.replace('_', '-')}" for k, v in explicit.items() if v is not None]
        if given:
            parser.error(f"give a SPEC or sizes ({', '.join(given)}), not both; override a spec with model.KEY=VALUE")
        return _arch_from_spec(args.words, args.specs, parser)
    missing = [f"--{k.replace('_', '-')}" for k, v in explicit.items() if v is None and k != "vocab_size"]
    if missing:
        parser.error(f"give a SPEC, or the sizes (missing {', '.join(missing)})")
    if args.n_embd % args.n_head:
        parser.error(f"--n-embd ({args.n_embd}) must be divisible by --n-head ({args.n_head})")
    vocab, note = args.vocab_size, ""
    if vocab is None:
        vocab, note = GPT2_VOCAB, "GPT-2's, as no --vocab-size was given"
    arch = Arch(
        n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, block_size=args.block_size,
        vocab_size=vocab, bias=not args.no_bias, tie_weights=not args.untied,
        pad_vocab_multiple=args.pad_vocab_multiple, vocab_note=note,
    )
    return arch, None, "sizes"


def _arch_from_spec(words: list[str], specs: list[str], parser: _Parser) -> tuple[Arch, Training, str]:
    exp, path = _load_one_spec(words, specs, parser)
    arch = _arch_of(exp, path)
    training = Training(exp.tokens_per_iter, exp.train.max_iters, exp.train.eval_only, exp.model.init_from)
    return arch, training, path


def _load_one_spec(words: list[str], specs: list[str], parser: _Parser) -> tuple[Any, str]:
    from nanogpt.cli import split_overrides
    from nanogpt.spec import load_spec

    paths, overrides = split_overrides(words, specs)
    if len(paths) != 1:
        parser.error(f"takes one SPEC (got {len(paths)}: {' '.join(paths) or 'none'})")
    exp, _ = load_spec(paths[0], overrides)  # SpecError propagates: the CLI prints it, exit 2
    return exp, paths[0]


def _arch_of(exp: Any, path: str) -> Arch:
    from nanogpt.spec.tables import GPTSpec

    model = exp.model
    if not isinstance(model, GPTSpec):
        raise InputError(f"{path}: model.kind {model.kind!r} is not a GPT; scaling knows the 'gpt' model only")
    vocab, note = model.vocab_size, ""
    if vocab is None:
        vocab, note = _dataset_vocab(exp.data, path)
    return Arch(
        n_layer=model.n_layer, n_head=model.n_head, n_embd=model.n_embd, block_size=model.block_size,
        vocab_size=vocab, bias=model.bias, tie_weights=model.tie_weights,
        pad_vocab_multiple=model.pad_vocab_multiple, vocab_note=note,
    )


def _dataset_vocab(data: Any, spec_path: str) -> tuple[int, str]:
    """The vocabulary of a spec whose model leaves it to the dataset: meta.json, else GPT-2's for BPE."""
    data_dir, dataset = getattr(data, "data_dir", None), getattr(data, "dataset", None)
    tokenizer = getattr(data, "tokenizer", None)
    if data_dir is not None and dataset is not None:
        meta = Path(data_dir, dataset, "meta.json")
        if meta.is_file():
            try:
                vocab = json.loads(meta.read_text(encoding="utf-8"))["vocab_size"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise InputError(f"cannot read vocab_size from {str(meta)!r}: {e}") from None
            if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 1:
                raise InputError(f"{str(meta)!r}: vocab_size must be a positive integer (got {vocab!r})")
            return vocab, f"from {meta}"
    if tokenizer == "gpt2":
        return GPT2_VOCAB, "GPT-2's BPE; the dataset is not prepared yet"
    raise InputError(
        f"{spec_path}: the vocabulary comes from the dataset, which is not prepared yet "
        f"(no {Path(str(data_dir), str(dataset), 'meta.json')}); run `nanogpt prepare {spec_path}` "
        "or give model.vocab_size=N"
    )


def _model_report(arch: Arch, training: Optional[Training]) -> dict[str, Any]:
    """Every figure `params` and `flops` print, as plain data."""
    real = arch.sizes()
    padded = arch.sizes(arch.padded_vocab_size)
    n = params(**real, bias=arch.bias)
    n_model = params(**padded, bias=arch.bias)
    total = model_params(**padded, bias=arch.bias, tie_weights=arch.tie_weights)
    per_seq = chinchilla_flops(**real)
    per_seq_full_mlp = chinchilla_flops(**real, ffw_size=4 * arch.n_embd)
    mfu_per_token = mfu_flops_per_token(
        n_params=n_model, n_layer=arch.n_layer, n_head=arch.n_head, n_embd=arch.n_embd, block_size=arch.block_size
    )
    report: dict[str, Any] = {
        "arch": {**real, "bias": arch.bias, "tie_weights": arch.tie_weights, "padded_vocab_size": arch.padded_vocab_size},
        "vocab_note": arch.vocab_note,
        "params": n,
        "params_model_non_embedding": n_model,
        "params_model_total": total,
        "flops_per_sequence_chinchilla": per_seq,
        "flops_per_token_chinchilla": per_seq / arch.block_size,
        "flops_per_sequence_chinchilla_full_mlp": per_seq_full_mlp,
        "flops_per_token_6n": 6 * n,
        "flops_per_token_mfu": mfu_per_token,
    }
    if training is not None:
        d = training.tokens
        report["training"] = {
            "tokens_per_iter": training.tokens_per_iter,
            "max_iters": training.max_iters,
            "eval_only": training.eval_only,
            "init_from": training.init_from,
            "tokens": d,
        }
        if d > 0:
            d_opt = optimal_tokens(n)
            compute = flops_6nd(n, d)
            report["training"].update(
                compute_6nd=compute,
                compute_chinchilla=per_seq * d / arch.block_size,
                predicted_loss=chinchilla_loss(n, d),
                optimal_tokens=d_opt,
                training_factor=d / d_opt,
                optimal_at_same_compute=asdict(compute_optimal_exact(compute)),
            )
    return report


def _model_table(what: str, arch: Arch, training: Optional[Training], source: str, r: dict[str, Any]) -> str:
    vocab = f"{arch.vocab_size}"
    if arch.padded_vocab_size != arch.vocab_size:
        vocab += f" (padded to {arch.padded_vocab_size} in the model)"
    if arch.vocab_note:
        vocab += f"  [{arch.vocab_note}]"
    rows: list[tuple[str, str]] = [
        ("model", f"n_layer={arch.n_layer} n_head={arch.n_head} n_embd={arch.n_embd} block_size={arch.block_size}"
                  f"{'' if arch.bias else ' bias=false'}{'' if arch.tie_weights else ' tie_weights=false'}"),
        ("vocab_size", vocab),
    ]
    if what == "params":
        rows += [
            ("params (N)", f"{_count(r['params'])}  all but the token and position embeddings (the notebook's, Chinchilla's N)"),
            ("params in the model", f"{_count(r['params_model_total'])}  every tensor once, padded vocab"),
            ("non-embedding (MFU)", f"{_count(r['params_model_non_embedding'])}  the model minus its position table"
                                    f"{'' if arch.tie_weights else ' and token table'}"),
        ]
    else:
        rows += [
            ("FLOPs / sequence", f"{r['flops_per_sequence_chinchilla'] / 1e9:,.6f} G  Chinchilla App. F as the notebook "
                                 f"counts it (forward+backward, {arch.block_size} tokens)"),
            ("", f"{r['flops_per_sequence_chinchilla_full_mlp'] / 1e9:,.6f} G  the same with the MLP at its real width "
                 "(the notebook passes ffw_size=4)"),
            ("FLOPs / token", f"{_si(r['flops_per_token_chinchilla'])}  Chinchilla App. F (notebook)"),
            ("", f"{_si(r['flops_per_token_6n'])}  6N"),
            ("", f"{_si(r['flops_per_token_mfu'])}  6N + 12*L*H*Q*T (nanoGPT/PaLM, used for MFU)"),
        ]
    t = r.get("training")
    if t is not None:
        rows.append(("tokens per iter", f"{t['tokens_per_iter']:,}  (batch_size * grad_accum * block_size)"))
        if t["eval_only"] or not t["tokens"]:
            rows.append(("training", "none: the spec evaluates only"))
        else:
            opt = t["optimal_at_same_compute"]
            rows += [
                ("training tokens D", f"{_si(t['tokens'])}  ({t['max_iters']:,} iters)"),
                ("compute 6ND", f"{t['compute_6nd']:.3e} FLOPs  (Chinchilla App. F: {t['compute_chinchilla']:.3e})"),
                ("predicted loss", f"{t['predicted_loss']:.4f}  L(N, D), Chinchilla's fit"),
                ("compute-optimal D", f"{_si(t['optimal_tokens'])} tokens for N ({t['optimal_tokens'] / r['params']:.1f} per parameter)"),
                ("vs compute-optimal", _verdict(t["training_factor"])),
                ("optimum at this compute", f"N = {_si(opt['n_params'])}, D = {_si(opt['tokens'])}, loss {opt['loss']:.4f}"),
            ]
            if t["init_from"] != "scratch":
                rows.append(("note", f"the weights start from {t['init_from']}; the fit describes training from scratch"))
    return f"{source}\n{_table(rows)}"


def _optimal_table(rows: list[Optimum], exact: list[Optimum], grids: list[str]) -> str:
    head = ("compute (FLOPs)", "params N", "tokens D", "loss", "tokens/param", "exact N", "exact D")
    body = [
        (f"{r.compute:e}", f"{r.n_params / 1e6:.2f}M", f"{r.tokens / 1e9:.2f}B", f"{r.loss:.4f}",
         f"{r.tokens / r.n_params:.1f}", f"{e.n_params / 1e6:.2f}M", f"{e.tokens / 1e9:.2f}B")
        for r, e in zip(rows, exact)
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in (head, *body)]
    used = sorted(set(grids))
    if len(used) == 1:
        other = "sweep" if used[0] == "notebook" else "notebook"
        where = f"on {GRID_WORDS[used[0]]}; --grid {other} picks the other grid, whose N for a budget may differ"
    else:
        where = f"on {GRID_WORDS['sweep']} for the --sweep rows, {GRID_WORDS['notebook']} for --compute (--grid picks one for all)"
    notes = [
        f"params N: the size with the lowest L(N, D), D = C / 6N, {where}",
        "exact: the continuous optimum of the same fit, which neither grid rounds",
    ]
    return "\n".join([*lines, *notes])


def _verdict(factor: float) -> str:
    if 0.9 <= factor <= 1.1:
        return f"about compute-optimal ({factor:.2f}x the optimal tokens for its size)"
    if factor > 1:
        return f"over-trained: {factor:.2f}x the compute-optimal tokens for its size"
    return f"under-trained: {factor:.3g}x the compute-optimal tokens for its size ({1 / factor:.2f}x too few)"


def _table(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def _count(n: int) -> str:
    return f"{n:,} ({n / 1e6:.6g}M)"


def _si(x: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{suffix}"
    return f"{x:.3g}"


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))

