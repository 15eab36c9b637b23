"""Bytes a training process holds, before it starts: `nanogpt scaling memory`.

Four parts, per process, as PRODUCT.md names them:

  params       the float32 master weights it keeps (all of them under ddp; its shard under fsdp)
  grads        their float32 gradients (ddp: the gradients and DDP's reduction buckets, which are
               a second copy unless `gradient_as_bucket_view`; fsdp: the gradient's shard)
  optimizer    AdamW's two float32 moments for the weights it keeps
  activations  what one micro-batch's forward keeps for the backward, plus the logits' gradient at
               the start of the backward (the largest transient), plus the 16-bit copies of the
               weights that autocast (ddp) or the all-gathers (fsdp) hold while they compute

Shards follow `torch.chunk` on dim 0, as FSDP2's `fully_shard` cuts them: with N processes a
tensor of R rows gives each of the first ranks ceil(R / N) rows and the last ones what is left,
so rank 0 holds the most and is the one reported. The activation count is per transformer block,
from the tensors the GPT of models/gpt.py (GPTSizes, with each of its architecture options) or the
Llama of models/llama.py (LlamaSizes) saves for its backward, in one of three profiles: float32;
16-bit autocast (ddp: float32 weights, the residual stream and the norms in float32, matmuls in 16 bits); and `pure` 16 bits (fsdp: FSDP's
MixedPrecisionPolicy hands every block 16-bit weights and 16-bit inputs and there is no autocast,
so the residual stream and everything computed from it is 16-bit). tests/perf/test_memory.py checks
every profile of both kinds against PyTorch's own saved-tensor hooks, byte for byte. No torch
here: the spec half and `check` use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Optional, Union

import attrs

from nanogpt.config.sizes import LlamaConfig, gpt_mlp_hidden

FLOAT32 = 4
HALF = 2  # bf16 and float16
INDEX = 8  # int64 token ids and positions


Shape = tuple[int, ...]


@attrs.frozen(kw_only=True)
class GPTSizes:
    """The sizes of a GPT that memory depends on (models/gpt.py's GPTConfig, without torch), with
    the GPT kind's architecture options (docs/architecture-options.md). `rope_theta` and
    `zero_init_residual` change no tensor: they are here so that a config's options pass as they are."""

    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    vocab_size: int
    """Rows of the embedding and the head: the padded vocabulary."""
    bias: bool = True
    tie_weights: bool = True
    dropout: float = 0.0
    position: str = "learned"
    rope_theta: float = 10000.0
    norm: str = "layernorm"
    qk_norm: bool = False
    mlp: str = "gelu"
    logit_softcap: Optional[float] = None
    zero_init_residual: bool = False

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @property
    def mlp_hidden(self) -> int:
        return gpt_mlp_hidden(self.n_embd, self.mlp)

    def norm_shapes(self) -> list[Shape]:
        """A norm's parameters: a LayerNorm's gain and (with `bias`) bias; an RMSNorm's gain only."""
        c = self.n_embd
        return [(c,)] + ([(c,)] if self.bias and self.norm == "layernorm" else [])

    def block_shapes(self) -> list[Shape]:
        """The parameter shapes of one transformer block, in gpt.py's order."""
        c, h, b = self.n_embd, self.mlp_hidden, self.bias
        shapes: list[Shape] = []
        shapes += self.norm_shapes()  # ln_1
        shapes += [(3 * c, c)] + ([(3 * c,)] if b else [])  # attn.c_attn
        shapes += [(c, c)] + ([(c,)] if b else [])  # attn.c_proj
        shapes += self.norm_shapes()  # ln_2
        shapes += [(h, c)] + ([(h,)] if b else [])  # mlp.c_fc
        if self.mlp == "swiglu":
            shapes += [(h, c)] + ([(h,)] if b else [])  # mlp.c_gate
        shapes += [(c, h)] + ([(c,)] if b else [])  # mlp.c_proj
        return shapes

    def root_shapes(self) -> list[Shape]:
        """The parameters outside the blocks: the token table, the position table (not with RoPE),
        ln_f, the head when untied."""
        c = self.n_embd
        shapes: list[Shape] = [(self.vocab_size, c)]
        if self.position == "learned":
            shapes.append((self.block_size, c))
        shapes += self.norm_shapes()
        if not self.tie_weights:
            shapes.append((self.vocab_size, c))
        return shapes

    def block_matmul_weight_elements(self) -> int:
        """Elements of one block's weights that go through a matmul (what autocast copies to 16 bits)."""
        c = self.n_embd
        return 4 * c * c + (3 if self.mlp == "swiglu" else 2) * c * self.mlp_hidden

    def matmul_weight_elements(self) -> int:
        """Elements of the weights that go through a matmul (what autocast copies to 16 bits)."""
        return self.n_layer * self.block_matmul_weight_elements() + self.vocab_size * self.n_embd

    def norm_saved_bytes(self, tokens: int, stream: int) -> int:
        """What one norm over the residual stream keeps: a LayerNorm its input (in the stream's
        precision), mean and rstd (float32 per position: CUDA's layer_norm keeps them in float32 for
        16-bit inputs; a CPU keeps them in the input's dtype). Eager PyTorch's RMSNorm is composite
        (as in LlamaSizes): its input upcast to float32, the normalised input before the gain, and
        rstd, all float32 whatever the input's precision."""
        c = self.n_embd
        if self.norm == "rmsnorm":
            return 2 * tokens * c * FLOAT32 + tokens * FLOAT32
        return tokens * c * stream + 2 * tokens * FLOAT32

    def block_saved_bytes(self, tokens: int, half: bool, batch: int, pure: bool = False) -> int:
        """What one block keeps for its backward, for `tokens` = batch x block_size positions.

        The residual stream stays float32 under autocast: the norms' inputs are float32 (in `pure`
        16 bits, under fsdp, 16-bit); every matmul input, the q/k/v projection, the attention output
        and the MLP's hidden tensors are in the compute precision; attention keeps one float32
        log-sum-exp per head and position instead of a T x T matrix (flash / fused SDPA).

        The options: qk-norm keeps per head and position a float32 rstd for q and for k and, in 16
        bits, their float32 upcasts (the composite RMSNorm); the normalised (or, with RoPE, rotated)
        q and k are new tensors that SDPA keeps beside the q/k/v projection (v is still a view of it).
        SDPA's output takes its query's layout: a view of the projection's (B, T, nh, hs) rows
        already is one, but a normalised query is (B, nh, T, hs), so the transpose before c_proj
        copies it (when neither nh nor T is 1). RoPE's products keep only the angles (their other factors need no gradient): in
        float32 the model's tables, once (`outer_saved_bytes`); under autocast a 16-bit copy of cos
        and sin for q and for k; in `pure` 16 bits the one copy of each FSDP's policy casts as the
        block's inputs. ReLU² keeps ReLU's output (which squaring keeps too) and the square, as GELU
        keeps its input and output. SwiGLU keeps c_gate's output, SiLU's, c_fc's and their product,
        of its own hidden width, and under autocast c_gate and c_fc each cast the float32 norm
        output to 16 bits.
        """
        c, act, nh = self.n_embd, HALF if half else FLOAT32, self.n_head
        pure = pure and half
        stream = HALF if pure else FLOAT32
        norms = 2 * self.norm_saved_bytes(tokens, stream)
        attention = tokens * c * act + 3 * tokens * c * act + batch * nh * self.block_size * FLOAT32 + tokens * c * act
        if self.qk_norm or self.position == "rope":
            attention += 2 * tokens * c * act  # the q and k SDPA attends with, new tensors
        if self.qk_norm:
            upcasts = 2 * tokens * c * FLOAT32 if half else 0
            # the transpose copies unless one of its dims is 1 (then it is already contiguous)
            copy = tokens * c * act if nh > 1 and self.block_size > 1 else 0
            attention += upcasts + 2 * tokens * nh * FLOAT32 + copy  # rstd of q and k; the output's copy
        if self.position == "rope" and half:
            attention += (2 if pure else 4) * self.block_size * self.head_size * HALF
        h = self.mlp_hidden
        if self.mlp == "swiglu":
            inputs = 2 if half and not pure else 1
            mlp = inputs * tokens * c * act + 4 * tokens * h * act
        else:
            mlp = tokens * c * act + 2 * tokens * h * act  # c_fc's input, the activation's input and output
        dropout = 2 * tokens * c if self.dropout > 0 else 0  # two residual dropout masks, a byte an element
        return norms + attention + mlp + dropout

    def outer_saved_bytes(self, tokens: int, half: bool, pure: bool = False, checkpointing: bool = False) -> int:
        """What the embedding, ln_f, head and loss keep: ids, targets, positions, ln_f (as the
        blocks' norms), the head's input, the soft cap's tanh (`logit_softcap`) and the float32
        log-softmax. With RoPE in float32, its tables, once: the blocks' products keep slices of
        them (not when the blocks are checkpointed: the checkpoint holds its inputs itself, where
        autograd's hooks do not see them, and keeps nothing else)."""
        c, act = self.n_embd, HALF if half else FLOAT32
        stream = HALF if half and pure else FLOAT32
        ids = 2 * tokens * INDEX  # input ids, targets
        if self.position == "learned":
            ids += self.block_size * INDEX  # positions
        tables = self.position == "rope" and not half and not checkpointing
        rope = 2 * self.block_size * self.head_size * FLOAT32 if tables else 0
        ln_f = self.norm_saved_bytes(tokens, stream) + tokens * c * act  # and the head's input
        softcap = tokens * self.vocab_size * act if self.logit_softcap is not None else 0
        log_softmax = tokens * self.vocab_size * FLOAT32  # the loss is computed in float32
        dropout = tokens * c if self.dropout > 0 else 0
        return ids + rope + ln_f + softcap + log_softmax + dropout + FLOAT32

    def checkpointed_extra_bytes(self, half: bool) -> int:
        """What checkpointed blocks keep besides their inputs: nothing (RoPE's tables go in as
        inputs of the checkpoint, which keeps them out of autograd's sight; they are buffers)."""
        return 0


@attrs.frozen(kw_only=True)
class LlamaSizes(LlamaConfig):
    """What memory depends on in a Llama: the model's own description (nanogpt.config.sizes.LlamaConfig,
    read here without torch), and what its tensors and activations take."""

    def block_shapes(self) -> list[Shape]:
        """The parameter shapes of one block, in llama.py's order."""
        c, kv, i = self.n_embd, self.kv_width, self.intermediate_size
        return [(c,), (c, c), (kv, c), (kv, c), (c, c), (c,), (i, c), (i, c), (c, i)]  # norms, q k v o, gate up down

    def root_shapes(self) -> list[Shape]:
        """The parameters outside the blocks: the token table, the final norm, the head when untied."""
        c = self.n_embd
        shapes: list[Shape] = [(self.vocab_size, c), (c,)]
        if not self.tie_embeddings:
            shapes.append((self.vocab_size, c))
        return shapes

    def block_matmul_weight_elements(self) -> int:
        c = self.n_embd
        return 2 * c * c + 2 * c * self.kv_width + 3 * c * self.intermediate_size

    def matmul_weight_elements(self) -> int:
        """Elements of the weights that go through a matmul (what autocast copies to 16 bits)."""
        return self.n_layer * self.block_matmul_weight_elements() + self.vocab_size * self.n_embd

    def block_saved_bytes(self, tokens: int, half: bool, batch: int, pure: bool = False) -> int:
        """What one block keeps for its backward, for `tokens` = batch x block_size positions.

        Eager PyTorch's RMSNorm is composite: it keeps its input upcast to float32, rstd (one
        float32 per position) and the normalised input before the weight, in float32 whatever the
        input's precision (16-bit when `pure`). Under autocast each projection casts that float32
        output to 16 bits itself, so q, k and v keep three copies and gate and up two; in float32,
        and in `pure` 16 bits (where the norm's output is already 16-bit, its weight being 16-bit),
        they share one. RoPE keeps the angles it multiplied by: under autocast a 16-bit copy of cos
        and of sin for q and for k; in `pure` 16 bits one copy of each, which FSDP's policy casts as
        the block's inputs and q and k share (in float32 the tables themselves, counted once in
        `outer_saved_bytes`). SDPA keeps q, the k and v it attended with (repeated to n_head heads
        under grouped-query attention), its output (o_proj's input) and a float32 log-sum-exp per
        head and position. The SwiGLU MLP keeps gate's output, SiLU's, up's and their product.
        """
        c, act, i = self.n_embd, HALF if half else FLOAT32, self.intermediate_size
        pure = pure and half
        norms = 2 * (2 * tokens * c * FLOAT32 + tokens * FLOAT32)
        projection_inputs = (3 + 2 if half and not pure else 1 + 1) * tokens * c * act
        angles = self.block_size * (c // self.n_head) * HALF
        rope = (2 if pure else 4) * angles if half else 0
        attention = 4 * tokens * c * act + batch * self.n_head * self.block_size * FLOAT32
        mlp = 4 * tokens * i * act
        dropout = 2 * tokens * c if self.dropout > 0 else 0  # two residual dropout masks, a byte an element
        return norms + projection_inputs + rope + attention + mlp + dropout

    def outer_saved_bytes(self, tokens: int, half: bool, pure: bool = False, checkpointing: bool = False) -> int:
        """What the embedding, final norm, head and loss keep: ids, targets, RoPE's float32 tables
        (in float32 only, checkpointed or not), the norm (float32 as in the blocks, `pure` or not),
        the head's input and the float32 log-softmax."""
        c, act = self.n_embd, HALF if half else FLOAT32
        ids = 2 * tokens * INDEX  # input ids, targets
        rope = 0 if half else 2 * self.block_size * (c // self.n_head) * FLOAT32
        norm = 2 * tokens * c * FLOAT32 + tokens * FLOAT32 + tokens * c * act  # input, normalised, rstd; head input
        log_softmax = tokens * self.vocab_size * FLOAT32
        dropout = tokens * c if self.dropout > 0 else 0
        return ids + rope + norm + log_softmax + dropout + FLOAT32

    def checkpointed_extra_bytes(self, half: bool) -> int:
        """What checkpointed blocks keep besides their inputs: RoPE's float32 tables, which every
        block takes as inputs (once, and in float32 already in `outer_saved_bytes`; under fsdp the
        checkpoint keeps them before FSDP's policy casts them)."""
        return 2 * self.block_size * (self.n_embd // self.n_head) * FLOAT32 if half else 0


Sizes = Union[GPTSizes, LlamaSizes]
"""What the planner takes: the sizes of a model of either kind."""


def local_gpus() -> list[tuple[str, int]]:
    """(name, bytes) of each GPU nvidia-smi lists on this machine; empty without one.

    Asked of nvidia-smi rather than torch so that `check` stays torch-free and touches no CUDA
    context; CUDA_VISIBLE_DEVICES is not applied (a job's GPUs are usually all of a kind).
    """
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.splitlines():
        name, _, mib = line.rpartition(",")
        if name.strip() and mib.strip().isdigit():
            gpus.append((name.strip(), int(mib) * 2**20))
    return gpus


def smallest_gpu() -> tuple[str, int] | None:
    """(name, bytes) of the GPU with the least memory that nvidia-smi lists, or None without one."""
    gpus = local_gpus()
    return min(gpus, key=lambda g: g[1]) if gpus else None


def elements(shape: Shape) -> int:
    return math.prod(shape)


def shard_rows(rows: int, world_size: int, rank: int) -> int:
    """Rows of a `rows`-row tensor that `rank` holds when `torch.chunk` cuts it in `world_size`."""
    per = -(-rows // world_size)  # torch.chunk: ceil-sized pieces, the last ones shorter or empty
    return max(0, min(per, rows - rank * per))


def shard_elements(shapes: Iterable[Shape], world_size: int, rank: int = 0) -> int:
    """Elements `rank` holds of these tensors, each sharded on dim 0 over `world_size` processes."""
    return sum(shard_rows(s[0], world_size, rank) * elements(s[1:]) for s in shapes)


@attrs.frozen(kw_only=True)
class Usage:
    """Bytes one process holds under one way of parallelising."""

    parallel: str
    params: int
    grads: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer + self.activations

    def as_dict(self) -> dict[str, int | str]:
        return {**attrs.asdict(self), "total": self.total}


def saved_bytes(s: Sizes, batch: int, half: bool, checkpointing: bool = False, pure: bool = False) -> int:
    """Bytes one micro-batch's forward keeps for its backward; `pure`: 16 bits throughout, as
    FSDP's mixed precision computes (only with `half`), rather than autocast.

    With activation checkpointing each block keeps only its input (the residual stream: float32,
    16-bit when `pure`); the backward then recomputes one block at a time, whose full set comes on
    top (`block_saved_bytes`).
    """
    tokens = batch * s.block_size
    if checkpointing:
        stream = HALF if half and pure else FLOAT32
        blocks = s.n_layer * tokens * s.n_embd * stream + s.checkpointed_extra_bytes(half)
    else:
        blocks = s.n_layer * s.block_saved_bytes(tokens, half, batch, pure)
    return blocks + s.outer_saved_bytes(tokens, half, pure, checkpointing)


def activation_bytes(
    s: Sizes, batch: int, half: bool, checkpointing: bool, weight_copies: bool, pure: bool = False
) -> int:
    """The activations' peak: what the forward keeps (in `pure` 16 bits or autocast's profile,
    `saved_bytes`), the logits' gradient at the start of the backward and, with `weight_copies`
    (autocast without FSDP), autocast's 16-bit weight copies.

    Autocast caches its copies for the whole forward; with checkpointing the backward makes one
    block's copies again as it recomputes it, so its peak is the larger of the forward's (every
    copy) and the backward's (one block recomputed, its copies and the head's).
    """
    tokens = batch * s.block_size
    kept = saved_bytes(s, batch, half, checkpointing, pure)
    logits_grad = tokens * s.vocab_size * (FLOAT32 + (HALF if half else 0))
    copies = half and weight_copies
    every_copy = s.matmul_weight_elements() * HALF if copies else 0
    if not checkpointing:
        return kept + logits_grad + every_copy
    block_copy = s.block_matmul_weight_elements() * HALF if copies else 0
    head_copy = s.vocab_size * s.n_embd * HALF if copies else 0
    backward = kept + s.block_saved_bytes(tokens, half, batch, pure) + logits_grad + block_copy + head_copy
    return max(kept + every_copy, backward)


def plan(
    s: Sizes,
    *,
    batch: int,
    world_size: int,
    half: bool,
    checkpointing: bool,
    reshard_after_forward: bool = True,
    micro_steps: int = 1,
) -> dict[str, Usage]:
    """Per-process bytes under ddp and under fsdp with `world_size` processes (rank 0, the largest).

    `micro_steps`: each process's micro-batches an optimizer step (grad_accum / world_size). Under fsdp
    more than one means the early micro-steps' gradients are not reduced: FSDP2 keeps them whole, in
    float32, until the last one reduce-scatters them (N x 4 bytes on every process)."""
    block_shapes = s.block_shapes()
    shapes = s.root_shapes() + block_shapes * s.n_layer
    n = sum(elements(sh) for sh in shapes)
    compute = HALF if half else FLOAT32

    ddp = Usage(
        parallel="ddp",
        params=n * FLOAT32,
        grads=2 * n * FLOAT32,  # the gradients and DDP's bucket copy of them
        optimizer=2 * n * FLOAT32,
        activations=activation_bytes(s, batch, half, checkpointing, weight_copies=True),
    )
    shard = shard_elements(shapes, world_size)
    if reshard_after_forward:
        # the root's parameters stay gathered through the step; blocks are gathered one ahead
        gathered = sum(elements(sh) for sh in s.root_shapes()) + 2 * sum(elements(sh) for sh in block_shapes)
    else:
        gathered = n
    # FSDP's mixed precision is not autocast: the blocks get 16-bit weights and inputs, and keep 16 bits
    activations = activation_bytes(s, batch, half, checkpointing, weight_copies=False, pure=half)
    fsdp = Usage(
        parallel="fsdp",
        params=shard * FLOAT32,
        grads=shard * FLOAT32 + (n * FLOAT32 if micro_steps > 1 else 0),
        optimizer=2 * shard * FLOAT32,
        activations=activations + gathered * compute,
    )
    return {"ddp": ddp, "fsdp": fsdp}


UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int:
    """'80GB', '80 GiB', '141e9' -> bytes; ValueError naming the text otherwise."""
    t = text.strip().upper().replace(" ", "")
    number = t.rstrip("KMGTIB")
    unit = t[len(number):]
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in UNITS or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{text!r} is not a memory size (like 80GB, 141GiB or 8e10)")
    return int(value * UNITS[unit])


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError


def table(usages: Sequence[Usage], device_memory: int | None) -> list[str]:
    """The planner's table: one row per way of parallelising, each part in GiB, and whether it fits."""
    head = f"{'parallel':11} {'params':>11} {'grads':>11} {'optimizer':>11} {'activations':>12} {'total':>11}"
    if device_memory is not None:
        head += f"  fits {human(device_memory)}"
    lines = [head]
    for u in usages:
        row = f"{u.parallel:11} {human(u.params):>11} {human(u.grads):>11} {human(u.optimizer):>11} {human(u.activations):>12} {human(u.total):>11}"
        if device_memory is not None:
            row += "  yes" if u.total <= device_memory else "  no"
        lines.append(row)
    return lines
