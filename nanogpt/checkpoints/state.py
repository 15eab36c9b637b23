"""What a checkpoint holds, whichever its format, and how it goes back into a model.

It holds everything an exact resume needs (model, optimizer, gradient scaler, the iteration, the
best val loss, the metrics so far, the spec and its hash: `training_state` builds it,
`restore_training_state` puts it back) and the model's architecture record and tokenizer, so a
checkpoint alone is enough to rebuild the model for sampling or finetuning. It holds no RNG
state: every random draw of a step is seeded from (seed, iteration, rank), so none is needed."""

from __future__ import annotations
import os
from pathlib import Path
from typing import Any
import attrs
import torch
from nanogpt.checkpoints import sharded
from nanogpt.checkpoints.files import load_file
from nanogpt.errors import CheckpointError


FORMAT = "nanogpt-checkpoint-1"
"""Value of the "format" key of every checkpoint this product writes."""


def state_mismatch(expected: dict[str, torch.Tensor], given: Any) -> str | None:
    """What keeps state dict `given` from loading into a module whose state dict is `expected`."""
    if not isinstance(given, dict):
        return f"its weights are a {type(given).__name__}, not a dict of tensors"
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    parts = []
    if missing:
        parts.append(f"missing {_names(missing)}")
    if unexpected:
        parts.append(f"unexpected {_names(unexpected)}")
    if parts:
        return "; ".join(parts)
    for key, tensor in expected.items():
        value = given[key]
        if not isinstance(value, torch.Tensor):
            return f"{key} is a {type(value).__name__}, not a tensor"
        if tuple(value.shape) != tuple(tensor.shape):
            return f"{key} has shape {tuple(value.shape)}, the model needs {tuple(tensor.shape)}"
    return None


def _names(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


TOKENIZER_KEYS = ("tokenizer", "vocab_size", "eot_id", "chars", "bos_id", "tokenizer_sha256", "tokenizer_json")
"""The part of a dataset's meta.json that `tokenizer_from_meta` needs."""


def tokenizer_record(meta: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a checkpoint stores of its dataset's meta.json to decode on its own (None without a tokenizer)."""
    if not isinstance(meta, dict) or "tokenizer" not in meta:
        return None
    return {key: meta[key] for key in TOKENIZER_KEYS if key in meta}


def training_state(
    *, model: Any, optimizer: Any, scaler: Any, tokenizer: Any, iteration: int, best_val_loss: float,
    val_loss: float | None, spec: dict[str, Any], spec_sha256: str, metrics: dict[str, Any], wall_seconds: float,
) -> dict[str, Any]:
    """The contents of a checkpoint: everything `restore_training_state` needs, and enough to sample alone."""
    return {
        "format": FORMAT,
        "model": model.state_dict(),
        "model_arch": model.arch(),
        # the dataset's tokenizer, so a checkpoint alone is enough to sample from
        "tokenizer": tokenizer_record(tokenizer.meta()) if tokenizer is not None else None,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        "iter": iteration,
        "best_val_loss": best_val_loss,
        "val_loss": val_loss,
        "spec_sha256": spec_sha256,
        "spec": spec,
        "metrics": dict(metrics),
        "wall_seconds": wall_seconds,
    }


@attrs.frozen
class Restored:
    """Where a resumed run stands, read from its checkpoint (the weights are already loaded)."""

    iteration: int
    best_val_loss: float
    wall_seconds: float
    """Wall time of the run's earlier sessions."""
    metrics: dict[str, Any]
    scaler: dict[str, Any] | None
    """The gradient scaler's state (float16 runs), to load once the scaler exists."""


def restore_training_state(source: Path, state: dict[str, Any] | None, model: Any, optimizer: Any, map_location: Any) -> Restored:
    """Load a checkpoint's model and optimizer state in place; CheckpointError when they do not fit.

    `state` is the checkpoint already loaded (rank 0 loaded it to verify it), else `source` is read.
    Any checkpoint goes into any model: a sharded one (a DCP directory) is read by every process,
    each its own part; a whole one (a `.pt` file) is sharded as it loads into an fsdp model."""
    if sharded.is_sharded_checkpoint(source):
        state = sharded.restore(source, model, optimizer)
    else:
        if state is None:
            state = load_checkpoint(source, map_location=map_location)
        problem = state_mismatch(model.state_dict(), state.get("model")) if not sharded.is_sharded(model) else None
        if problem is not None:
            raise CheckpointError(f"checkpoint {str(source)!r} does not fit this run's model: {problem}")
        try:
            if sharded.is_sharded(model):
                sharded.load_whole_into(model, optimizer, state)
            else:
                model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise CheckpointError(
                f"checkpoint {str(source)!r} holds state that does not fit this run's model and optimizer ({e})"
            ) from None
    return Restored(
        iteration=int(state["iter"]),
        best_val_loss=float(state["best_val_loss"]),
        wall_seconds=float(state.get("wall_seconds", 0.0)),
        metrics=dict(state.get("metrics") or {}),
        scaler=state.get("scaler"),
    )


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """A checkpoint's contents as one dict, whichever its format: a `.pt` file unpickled with
    `weights_only=True`, or a sharded checkpoint's directory stitched together on the CPU (its
    weights only). Nothing in either runs: see `files.load_file` and `sharded.read_metadata`."""
    if sharded.is_sharded_checkpoint(path):
        return sharded.load_whole(path)
    return load_file(path, map_location=map_location)
