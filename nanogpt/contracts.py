"""What the runner relies on from the components a spec names: written contracts at the seams.

The registry builds a model, a batch source, an optimizer and a schedule, each from its own spec
table; from there on the runner, `bench`, `sample`, `perplexity`, checkpoints and the manifest see
them only through these Protocols. A plugin kind that keeps its contract trains, checkpoints,
resumes exactly, evaluates and samples like a built-in one (tests/plugins/mlp_model.py, the
registry's own example, and tests/plugins/pattern_data.py show one of each). Nothing here imports
torch at run time: the types are for readers and type checkers.

A model kind is three things, all registered under its `kind` (`MODELS.register`):
- a spec class deriving from `nanogpt.config.tables.ModelSpec` (which already carries
  `block_size`, `dropout` and `init_from`, the fields every model has);
- a builder `build(spec, *, vocab_size) -> LanguageModel`; with `init_from = "scratch"` it must
  build an untrained model of exactly the spec's shapes;
- the model's `arch()`: its spec table's fields (with `kind`) plus `vocab_size`. A checkpoint
  stores it, and `nanogpt.models.weights.rebuild` turns it back into a model through the same builder
  (`init_from = "scratch"`), then loads the saved weights into it. Nothing past the registry
  names a kind.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch


ROLES = ("hidden", "embedding", "head", "other")
"""The parts a model's `param_roles()` names: "hidden", a 2-D weight matrix inside the repeated
transformer blocks (what Muon orthogonalises); "embedding", a token or position table (a head tied
to the token table is one); "head", an untied output projection's weight; "other", everything
else (norms' gains, biases)."""


@runtime_checkable
class LanguageModel(Protocol):
    """A causal language model over token ids (a `torch.nn.Module`).

    The runner calls it as `logits, loss = model(idx, targets)` with `idx` and `targets` (B, T)
    int64 tensors, T at most `context_length`: `loss` is the mean cross-entropy over the targets
    that are not -1 (None without targets). With targets, or with `all_logits=True`, `logits` are
    every position's (B, T, vocab_size); without either only the last position's (B, 1,
    vocab_size) are needed (what sampling asks for). Its parameters are everything the optimizer
    trains; its `state_dict()` is everything a checkpoint saves, and loads back with
    `load_state_dict(strict=True)` into a model rebuilt from `arch()`. Its randomness (dropout)
    draws from torch's default generators, which the runner seeds from (seed, iteration, rank)
    before every step: a model must keep no random state of its own for a resume to be exact.

    Optional: `new_kv_cache(batch_size)` returning a cache that `model(idx, kv_cache=cache)`
    fills and reads, so generation costs one position per token (nanogpt.models.generation uses it when
    present, and recomputes the window otherwise); and a `checkpoint_blocks` switch, which
    `system.activation_checkpointing = "blocks"` turns on so the backward recomputes each block (a
    model without it refuses that setting); and `blocks`, its repeated transformer blocks (an
    `nn.ModuleList`), which `system.parallel = "fsdp"` shards one by one and `system.compile`
    compiles one by one there (a model without it is sharded as one unit). And `param_roles()`,
    each parameter's name (as `named_parameters()` gives it) -> its part: "hidden" (a 2-D weight
    matrix inside the blocks), "embedding", "head" (an untied output projection) or "other";
    `optimizer.kind = "muon"` puts the hidden matrices in Muon and the rest in AdamW by it
    (`nanogpt.models.gpt.roles_by_structure` answers it for a model built like GPT or Llama), and
    refuses a model without it.
    """

    def __call__(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *, all_logits: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    @property
    def context_length(self) -> int:
        """The longest sequence the model takes (its spec's `block_size`)."""
        ...

    @property
    def vocab_size(self) -> int:
        """Token ids it knows, 0 .. vocab_size-1: the last dimension of its logits."""
        ...

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameters, each shared tensor once. `non_embedding` leaves out position tables: the N of MFU
        and of the manifest's `model.params`."""
        ...

    def flops_per_token(self) -> int:
        """Training FLOPs per token (forward and backward): MFU and the manifest's `model.flops_per_token`."""
        ...

    def arch(self) -> dict[str, Any]:
        """The architecture record a checkpoint stores: `kind`, the model table's fields that fix the
        shapes of its weights, and `vocab_size`; plain TOML-like values only (it is pickled with
        `weights_only`). `nanogpt.models.weights.rebuild(arch)` builds an untrained model of the same shapes."""
        ...

    def crop_block_size(self, block_size: int) -> None:
        """Keep only the first `block_size` positions (a smaller context than the weights were trained
        with); a model whose weights do not depend on positions only records the new length."""
        ...


@runtime_checkable
class Batches(Protocol):
    """The training and evaluation batches of one process, each a pure function of (seed, iteration).

    A resumed run, or one on another number of processes, sees the same global batches because
    nothing here has state: no loader position is ever saved. The runner asks for nothing else.
    """

    @property
    def vocab_size(self) -> int:
        """Token ids the data holds, 0 .. vocab_size-1 (the model is built for it)."""
        ...

    @property
    def tokenizer(self) -> Any | None:
        """The `nanogpt.data.tokenizers.Tokenizer` that made the ids, or None when there is none.

        Samples in TensorBoard need it, and checkpoints record `tokenizer.meta()` so that `sample`
        and `perplexity` can decode with a checkpoint alone."""
        ...

    def micro_steps(self, grad_accum: int) -> range:
        """The global micro-batch numbers (of 0 .. grad_accum-1) this process computes in each iteration."""
        ...

    def train_batches(self, iteration: int, grad_accum: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's (inputs, targets) micro-batches of one iteration, (B, T) each, on its device."""
        ...

    def eval_keys(self, split: str, eval_iters: int) -> list[tuple[int, ...]]:
        """This process's share of the fixed evaluation batches of a split ("train" or "val"): the
        same keys at every evaluation, the shares of all processes together `eval_iters` batches."""
        ...

    def batch(self, split: str, key: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """The (inputs, targets) of one key, on the CPU."""
        ...

    def to_device(self, xy: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch moved to this process's device."""
        ...

    def record(self) -> dict[str, Any]:
        """The manifest's `data`: each split's `path`, `tokens` and `sha256`, the `tokenizer` and
        `vocab_size` (PRODUCT.md); `diff` compares it between runs."""
        ...


@runtime_checkable
class Process(Protocol):
    """This process's place in its job, as a data builder sees it: the runner passes its
    `nanogpt.training.dist.DistEnv`, which reads torchrun's variables once."""

    @property
    def rank(self) -> int:
        """This process's number in the job, 0 .. world_size-1."""
        ...

    @property
    def world_size(self) -> int:
        """Processes in the job (1 without torchrun)."""
        ...

    @property
    def device(self) -> torch.device:
        """Where this process's batches go."""
        ...

    @property
    def device_type(self) -> str:
        """`device.type`: "cpu", "cuda", ..."""
        ...

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that prepares data and writes the run's files."""
        ...

    def wait_for_main(self) -> None:
        """Until rank 0 reaches the same call (it prepared the data meanwhile); at once for one process."""
        ...


class OptimizerBuilder(Protocol):
    """`build(spec, *, model) -> torch.optim.Optimizer`: what a registered optimizer builder is.

    The runner sets every param group's "lr" before each step from the schedule: a group with a
    "base_lr" of its own gets base_lr times the schedule's multiplier (its rate over the spec's
    `lr`), any other the schedule's rate itself, so the builder's own lr is only a start. A group
    with a "role" has its rate logged by that name, and its size in the manifest. It saves and restores the optimizer with `state_dict` and
    `load_state_dict`, which is all an exact resume needs of it.
    """

    def __call__(self, spec: Any, *, model: Any) -> torch.optim.Optimizer: ...


class Schedule(Protocol):
    """`lr_at(iteration) -> float`: a pure function of the iteration, so a resume needs no scheduler state.

    Builders are called `build(spec, *, lr)` with the optimizer's peak learning rate."""

    def __call__(self, iteration: int) -> float: ...
