"""Data: sources of text, tokenizers, `prepare`, and prepared datasets opened for training.

    from nanogpt.data import ensure_prepared, dataset_record
    ds = ensure_prepared(spec.data)        # prepares <data_dir>/<dataset> if missing or stale
    ds.train, ds.val                       # read-only np.memmap of token ids
    ds.tokenizer.decode(ds.val[:100])      # the tokenizer the dataset was made with

    from nanogpt.data.prepare import prepare   # the function; `nanogpt.data.prepare` is its module

Names are imported lazily, so `import nanogpt.data.x` stays cheap (no tiktoken, no datasets).

May import: config (the `[data]` table's spec), contracts (a `Process` is what the batch builder
is given) and the foundation; never models, checkpoints, training or runs.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PreparedDataset": "nanogpt.data.files",
    "open_dataset": "nanogpt.data.files",
    "ensure_prepared": "nanogpt.data.prepare",
    "dataset_record": "nanogpt.data.files",
    "dataset_dir": "nanogpt.data.files",
    "Tokenizer": "nanogpt.data.tokenizers",
    "GPT2Tokenizer": "nanogpt.data.tokenizers",
    "CharTokenizer": "nanogpt.data.tokenizers",
    "gpt2_encoding": "nanogpt.data.tokenizers",
    "gpt2_tokenizer": "nanogpt.data.tokenizers",
    "tokenizer_from_meta": "nanogpt.data.tokenizers",
    "render_shakespeare": "nanogpt.data.sources",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nanogpt.data' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
