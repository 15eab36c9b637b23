"""Components by name: `kind` -> spec class -> builder.

Each component table of a spec (`[model]`, `[data]`, `[optimizer]`, `[schedule]`) names its
`kind`; the registry of that table knows the spec class that validates it and the builder that
turns a validated spec into the thing itself. Built-in builders are named as "module:function"
strings and imported only when built, so validating a spec never imports torch.

A user adds a kind from their own module, named in the spec's `plugins = ["my_models"]`. A model
kind is a spec class deriving from `ModelSpec` (which already has `block_size`, `dropout` and
`init_from`; its ARCH_FIELDS name the fields `check` takes from the weights `init_from` names), a
builder, and a module that keeps the `nanogpt.contracts.LanguageModel` contract; this one trains, checkpoints, resumes, evaluates and samples as it stands
(tests/plugins/mlp_model.py is this text, and tests/training/test_plugin_components.py runs it)::

    import attrs
    import torch
    from torch import nn
    from torch.nn import functional as F

    from nanogpt.registry import MODELS
    from nanogpt.config.tables import ModelSpec
    from nanogpt.models.weights import load_pretrained


    @attrs.frozen(kw_only=True)
    class MLPSpec(ModelSpec):
        ARCH_FIELDS = ("width",)  # left out, it comes from an init_from run; stated, it must agree
        kind: str = "mlp"
        width: int = 256


    class MLP(nn.Module):
        # the next token from the current one alone, through one hidden layer (a bigram model)

        def __init__(self, spec: MLPSpec, vocab_size: int):
            super().__init__()
            self.width, self.vocab_size, self.context_length = spec.width, vocab_size, spec.block_size
            self.wte = nn.Embedding(vocab_size, spec.width)
            self.drop = nn.Dropout(spec.dropout)
            self.head = nn.Linear(spec.width, vocab_size)

        def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *, all_logits: bool = False):
            logits = self.head(self.drop(F.gelu(self.wte(idx))))  # (B, T, vocab_size)
            if targets is None:
                return logits, None
            return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1)

        def num_params(self, non_embedding: bool = True) -> int:
            return sum(p.numel() for p in self.parameters())

        def flops_per_token(self) -> int:
            return 6 * self.num_params()

        def arch(self) -> dict:
            return {"kind": "mlp", "width": self.width, "block_size": self.context_length, "vocab_size": self.vocab_size}

        def crop_block_size(self, block_size: int) -> None:
            self.context_length = block_size


    @MODELS.register("mlp", MLPSpec)
    def build_mlp(spec: MLPSpec, *, vocab_size: int) -> MLP:
        if spec.init_from != "scratch":  # a run or checkpoint of this kind, rebuilt from its arch()
            return load_pretrained(spec.init_from, dropout=spec.dropout, block_size=spec.block_size)
        return MLP(spec, vocab_size)

A `[model] kind = "mlp"` table then takes `width`. A dataset kind is registered on `DATA` the
same way; its builder gets `env`, `seed`, `batch_size` and `block_size`, and returns a
`nanogpt.contracts.Batches` (tests/plugins/pattern_data.py has one).

Installed packages can do the same through the `nanogpt.plugins` entry-point group (each entry
names a module); nothing else is imported.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable
from typing import Any, Union

import attrs

from nanogpt.config import tables as t

Builder = Callable[..., Any]


@attrs.define
class Registry:
    """The kinds one component table can take."""

    table: str
    """The spec table these kinds fill (`model`, `data`, ...)."""
    base: type
    """The class every spec of this table derives from."""
    default_kind: str
    """The kind a table that leaves out `kind` gets."""
    _specs: dict[str, type] = attrs.field(factory=dict)
    _builders: dict[str, Union[Builder, str, None]] = attrs.field(factory=dict)

    def register(self, kind: str, spec_class: type, builder: Builder | str | None = None):
        """Register `kind`; usable as a decorator on the builder. Re-registering replaces."""
        if not attrs.has(spec_class):
            raise TypeError(f"{spec_class.__name__} must be an attrs class")
        default = attrs.fields_dict(spec_class).get("kind")
        if default is None or default.default != kind:
            raise TypeError(f"{spec_class.__name__} needs a field `kind: str = {kind!r}`")
        self._specs[kind] = spec_class
        self._builders[kind] = builder
        if builder is None:
            def decorate(fn: Builder) -> Builder:
                self._builders[kind] = fn
                return fn

            return decorate
        return builder

    def kinds(self) -> list[str]:
        load_entry_points()
        return sorted(self._specs)

    def spec_class(self, kind: str) -> type | None:
        load_entry_points()
        return self._specs.get(kind)

    def builder(self, kind: str) -> Builder:
        b = self._builders.get(kind)
        if isinstance(b, str):
            module, _, name = b.partition(":")
            b = getattr(importlib.import_module(module), name)
            self._builders[kind] = b
        if b is None:
            raise LookupError(f"{self.table} kind {kind!r} has a spec class but no builder")
        return b

    def build(self, spec: Any, /, **context: Any) -> Any:
        """Build the component a validated spec describes; `context` is what its builder needs."""
        return self.builder(spec.kind)(spec, **context)


MODELS = Registry("model", t.ModelSpec, "gpt")
DATA = Registry("data", t.DataSpec, "tokens")
OPTIMIZERS = Registry("optimizer", t.OptimizerSpec, "adamw")
SCHEDULES = Registry("schedule", t.ScheduleSpec, "cosine")

REGISTRIES: dict[type, Registry] = {r.base: r for r in (MODELS, DATA, OPTIMIZERS, SCHEDULES)}
"""The registry behind each component base class (the type of an Experiment field)."""

MODELS.register("gpt", t.GPTSpec, "nanogpt.models.weights:build_gpt")
MODELS.register("llama", t.LlamaSpec, "nanogpt.models.weights:build_llama")
DATA.register("tokens", t.TokensSpec, "nanogpt.data.batches:build_tokens")
OPTIMIZERS.register("adamw", t.AdamWSpec, "nanogpt.training.optimizers:build_adamw")
OPTIMIZERS.register("sgd", t.SGDSpec, "nanogpt.training.optimizers:build_sgd")
OPTIMIZERS.register("muon", t.MuonSpec, "nanogpt.training.optimizers:build_muon")
SCHEDULES.register("cosine", t.CosineSpec, "nanogpt.training.schedules:build_cosine")
SCHEDULES.register("linear", t.LinearSpec, "nanogpt.training.schedules:build_linear")
SCHEDULES.register("constant", t.ConstantSpec, "nanogpt.training.schedules:build_constant")
SCHEDULES.register("wsd", t.WSDSpec, "nanogpt.training.schedules:build_wsd")

def import_plugin(module: str) -> str | None:
    """Import a plugin's module; None when it worked, else why not.

    Anything the plugin's code raises is caught, BaseException included: a plugin calling
    sys.exit(0) would otherwise end `check` with status 0 and no verdict (a bad spec passing),
    and a KeyboardInterrupt would be a traceback.
    """
    try:
        importlib.import_module(module)
    except SystemExit as e:
        return f"SystemExit: it called sys.exit({e.code!r}) while being imported"
    except KeyboardInterrupt:
        return "KeyboardInterrupt: it was interrupted while being imported"
    except BaseException as e:  # noqa: BLE001 - a plugin's own failure is reported, never raised
        return f"{type(e).__name__}: {e}"
    return None


_entry_point_failures: list[str] | None = None


def load_entry_points() -> list[str]:
    """Import the modules installed packages name in the `nanogpt.plugins` group, once each.

    Returns a message for each that failed, naming it; the others are loaded all the same.
    """
    global _entry_point_failures
    if _entry_point_failures is None:
        _entry_point_failures = []  # first: a plugin asking for kinds while it imports must not start over
        for ep in importlib.metadata.entry_points(group="nanogpt.plugins"):
            module = ep.value.partition(":")[0].strip()
            failure = import_plugin(module)
            if failure is not None:
                dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "an installed package"
                _entry_point_failures.append(
                    f"installed plugin {ep.name!r} (module {module!r}, from {dist}) cannot be imported: {failure}"
                )
    return list(_entry_point_failures)
