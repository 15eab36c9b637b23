"""A model and its tokenizer from anything a user names: `sample`, `perplexity` and `export` load through here.

`load_model(source)`:

- `gpt2`, `gpt2-medium`, `gpt2-large`, `gpt2-xl`: OpenAI's weights through transformers (the hub,
  or its local cache); GPT-2's BPE.
- a Hugging Face model directory (it has a config.json): its architecture's importer, and its
  tokenizer when it has one (GPT-2's BPE for a GPT-2 directory without).
- a run directory: its best or latest checkpoint (`which`). A run without a checkpoint (an
  eval_only run) stands for the model its spec's `model.init_from` names, cropped to the spec's
  block size; the tokenizer is the run's dataset's.
- a checkpoint file of this product, or a sharded checkpoint's directory: the tokenizer the
  checkpoint records (runs store their dataset's under "tokenizer"); for older checkpoints, the
  meta.json of the dataset its spec names, or GPT-2's BPE when the spec says `data.tokenizer = "gpt2"`.
- a nanoGPT `ckpt.pt`: GPT-2's BPE (nanoGPT's char datasets keep their vocabulary in a pickle,
  which is never unpickled here: give the meta.json of a dataset prepared by `nanogpt prepare`).

`tokenizer_meta` (the `--tokenizer-meta PATH` flag: a meta.json, or the dataset folder holding
one) overrides all of that. A tokenizer with more ids than the model has rows is refused, and so
are weights that are not finite."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import attrs
import torch

from nanogpt.errors import DataError, InputError


# --------------------------------------------------------------------------- loading models


@attrs.frozen
class LoadedModel:
    """A model ready to generate or score, with the tokenizer of its training data."""

    model: Any
    """The GPT, on the CPU, in eval mode."""
    tokenizer: Any
    """A nanogpt.data.tokenizers.Tokenizer."""
    description: str
    """What was loaded, in words (for stderr and reports)."""


def load_model(source: str, *, which: str = "best", tokenizer_meta: str | None = None) -> LoadedModel:
    """The model and tokenizer `source` names (see the module docstring); InputError when it names nothing usable."""
    from nanogpt.data.tokenizers import gpt2_tokenizer

    forced = read_tokenizer_meta(tokenizer_meta) if tokenizer_meta else None
    model, tokenizer, description = _load(str(source), which, visited=())
    if forced is not None:
        tokenizer = forced
    elif isinstance(tokenizer, _Unknown):
        raise InputError(tokenizer.why)
    elif tokenizer is None:
        tokenizer = gpt2_tokenizer()
    if tokenizer.vocab_size > model.vocab_size:
        raise InputError(
            f"{description}: its vocabulary has {model.vocab_size} tokens, but the {tokenizer.name} "
            f"tokenizer has {tokenizer.vocab_size}; give the meta.json of the dataset it was trained on "
            "with --tokenizer-meta PATH"
        )
    not_finite = next((name for name, p in model.named_parameters() if not torch.isfinite(p).all()), None)
    if not_finite is not None:  # a run that diverged: sampling would fail, perplexity be NaN
        raise InputError(f"{description}: its weights are not finite (NaN or inf, first in {not_finite}); nothing can be computed from them")
    model.eval()
    return LoadedModel(model, tokenizer, description)


def read_tokenizer_meta(path: str) -> Any:
    """The tokenizer of a dataset's meta.json (`path` is the file or the dataset folder holding it)."""
    from nanogpt.data.files import META
    from nanogpt.data.tokenizers import tokenizer_from_meta

    p = Path(path)
    if not p.exists():
        raise InputError(f"--tokenizer-meta {path!r}: no such file or directory")
    file = p / META if p.is_dir() else p
    if p.is_dir() and not file.exists():
        raise InputError(f"--tokenizer-meta {path!r}: the folder has no {META}")
    if not file.is_file():  # a FIFO would block, /dev/zero never end
        raise InputError(f"--tokenizer-meta {path!r}: {str(file)!r} is not a regular file")
    try:
        return tokenizer_from_meta(_read_json(file))
    except DataError as e:
        raise InputError(f"--tokenizer-meta {path!r}: {e}") from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read {str(path)!r} as JSON: {e}") from None
    if not isinstance(data, dict):
        raise DataError(f"{str(path)!r} holds a JSON {type(data).__name__}, not an object")
    return data


@attrs.frozen
class _Unknown:
    """No tokenizer can be told for a model (an error unless --tokenizer-meta gives one); `why` says so."""

    why: str


def _load(source: str, which: str, visited: tuple[str, ...]) -> tuple[Any, Any, str]:
    """(model, its tokenizer: a Tokenizer, None for GPT-2's BPE by default, or _Unknown; description)."""
    from nanogpt.config.pretrained import NotPretrained, locate_weights

    try:
        weights = locate_weights(source, hub_ids=True)
    except NotPretrained as e:
        if Path(source).is_dir():
            raise InputError(
                f"directory {source!r} is neither a run (manifest.json, checkpoints/) nor a Hugging Face model (config.json)"
            ) from None
        raise InputError(str(e)) from None
    if weights.kind == "run":
        return _load_run(weights.path, which, visited)
    if weights.kind == "checkpoint":
        return _load_checkpoint(weights.path)
    return _load_hf(source)


def _load_hf(source: str) -> tuple[Any, Any, str]:
    """A Hugging Face model (a directory or a hub name), imported by its model_type's importer."""
    from nanogpt.config.tables import GPT2_NAMES
    from nanogpt.models.weights import hf_importer

    importer = hf_importer(source)
    tokenizer = _hf_tokenizer_of(source) if importer.own_tokenizer else None
    description = source if source in GPT2_NAMES and not Path(source).is_dir() else f"Hugging Face model {source}"
    return importer.load(source), tokenizer, description


def _hf_tokenizer_of(source: str) -> Any:
    """The tokenizer.json of a Hugging Face model, or _Unknown when it has none this product reads."""
    from nanogpt.data.tokenizers import HF_PREFIX, hf_tokenizer

    try:
        return hf_tokenizer(HF_PREFIX + source)
    except DataError as e:
        return _Unknown(
            f"{source!r} has no tokenizer this product reads ({e}); give the meta.json of a dataset "
            "tokenized for it with --tokenizer-meta PATH"
        )


def _load_run(run_dir: Path, which: str, visited: tuple[str, ...]) -> tuple[Any, Any, str]:
    from nanogpt.checkpoints.catalog import checkpoint_for, checkpoint_paths

    if checkpoint_paths(run_dir):
        return _load_checkpoint(checkpoint_for(run_dir, which))

    # no checkpoint: an eval_only run (or one stopped before its first): its weights are init_from's
    spec = _run_spec(run_dir)
    model_table = spec.get("model") or {}
    init_from = model_table.get("init_from", "scratch")
    if not isinstance(init_from, str) or init_from == "scratch":
        raise InputError(
            f"run {str(run_dir)!r} has no checkpoint and its model starts from scratch "
            "(model.init_from = 'scratch'): there are no weights to sample from"
        )
    key = str(run_dir.resolve())
    if key in visited:
        raise InputError(f"run {str(run_dir)!r}: model.init_from leads back to the run itself")
    try:
        model, tokenizer, inner = _load(init_from, which, (*visited, key))
    except InputError as e:
        raise InputError(f"run {str(run_dir)!r} has no checkpoint; its model.init_from {init_from!r}: {e}") from None
    block_size = model_table.get("block_size")
    if isinstance(block_size, int) and 1 <= block_size < model.context_length:
        model.crop_block_size(block_size)  # the context the run evaluated with
    own = _spec_tokenizer(spec)  # the run's dataset: what the run evaluated the model on
    return model, own if own is not None else tokenizer, f"run {run_dir} (no checkpoint: model.init_from {inner})"


def _run_spec(run_dir: Path) -> dict[str, Any]:
    """The resolved spec of a run as plain data: spec.toml, else the manifest's copy."""
    import tomllib

    with contextlib.suppress(OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return tomllib.loads((run_dir / "spec.toml").read_text(encoding="utf-8"))
    with contextlib.suppress(OSError, UnicodeDecodeError, ValueError, AttributeError):
        spec = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8")).get("spec")
        if isinstance(spec, dict):
            return spec
    raise InputError(f"run {str(run_dir)!r} has neither a readable spec.toml nor a manifest.json with its spec")


def _load_checkpoint(path: Path) -> tuple[Any, Any, str]:
    from nanogpt.checkpoints.state import FORMAT
    from nanogpt.data.tokenizers import tokenizer_from_meta
    from nanogpt.models.weights import from_checkpoint

    model = from_checkpoint(str(path))  # refuses unsafe pickles before anything else reads the file
    head = _checkpoint_head(path)
    if head.get("format") != FORMAT:
        return model, None, f"nanoGPT checkpoint {path}"
    description = f"checkpoint {path}"
    record = head.get("tokenizer")
    if isinstance(record, dict):
        try:
            return model, tokenizer_from_meta(record), description
        except DataError as e:
            raise InputError(f"{description} records a bad tokenizer: {e}") from None
    # checkpoints from before the tokenizer was stored: the dataset their spec names
    spec = head.get("spec")
    tokenizer = _spec_tokenizer(spec if isinstance(spec, dict) else {})
    if tokenizer is None:
        tokenizer = _Unknown(
            f"{description} records no tokenizer, and the dataset its spec names has no meta.json here; "
            "give the dataset's meta.json with --tokenizer-meta PATH"
        )
    return model, tokenizer, description


def _checkpoint_head(path: Path) -> dict[str, Any]:
    """A checkpoint's small entries, without reading its tensors (memory-mapped; the file is known safe by now)."""
    from nanogpt.checkpoints.state import load_checkpoint

    from nanogpt.checkpoints.sharded import is_sharded_checkpoint, read_state

    if is_sharded_checkpoint(path):
        return {key: value for key, value in read_state(path).items() if key in ("format", "tokenizer", "spec")}
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # not a zip-format file: mmap cannot apply, read it whole
        state = load_checkpoint(path)
    return {key: value for key, value in state.items() if key in ("format", "tokenizer", "spec")}


def _spec_tokenizer(spec: dict[str, Any]) -> Any:
    """The tokenizer of the dataset a resolved spec names: its meta.json, or GPT-2's BPE by name; None when unknown."""
    from nanogpt.data.files import read_meta
    from nanogpt.data.tokenizers import gpt2_tokenizer, tokenizer_from_meta

    data = spec.get("data") or {}
    data_dir, dataset = data.get("data_dir"), data.get("dataset")
    if isinstance(data_dir, str) and isinstance(dataset, str):
        with contextlib.suppress(DataError, OSError):
            meta = read_meta(Path(data_dir) / dataset)
            if meta is not None:
                return tokenizer_from_meta(meta)
    if data.get("tokenizer") == "gpt2":
        return gpt2_tokenizer()
    return None


# ------------------------------------------------------------------------- device and dtype


# ------------------------------------------------------------------------------- generation


# ------------------------------------------------------------------------------------ the verb


