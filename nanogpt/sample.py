"""Text generation: the `sample` verb, and the samples a run logs at its evaluations (one code path).

`load_model(source)` turns anything a user may name into a model and the tokenizer it reads and
writes text with (`nanogpt perplexity` loads its models the same way):

- `gpt2`, `gpt2-medium`, `gpt2-large`, `gpt2-xl`: OpenAI's weights through transformers (the hub,
  or its local cache); GPT-2's BPE.
- a Hugging Face GPT-2 model directory (it has a config.json): GPT-2's BPE.
- a run directory: its best or latest checkpoint (`which`). A run without a checkpoint (an
  eval_only run) stands for the model its spec's `model.init_from` names, cropped to the spec's
  block size; the tokenizer is the run's dataset's.
- a checkpoint file of this product: the tokenizer the checkpoint records (runs store their
  dataset's under "tokenizer"); for older checkpoints, the meta.json of the dataset its spec
  names, or GPT-2's BPE when the spec says `data.tokenizer = "gpt2"`.
- a nanoGPT `ckpt.pt`: GPT-2's BPE (nanoGPT's char datasets keep their vocabulary in a pickle,
  which is never unpickled here: give the meta.json of a dataset prepared by `nanogpt prepare`).

`tokenizer_meta` (the `--tokenizer-meta PATH` flag: a meta.json, or the dataset folder holding
one) overrides all of that. A tokenizer with more ids than the model has rows is refused.

Sampling draws every sample of a call as one batch, with a KV cache, from a generator seeded
with `seed`: the same seed, model, prompt and device give the same text. The verb streams the
first sample to stdout as its tokens come (the batch is computed together, so the first row is
as far along as any); the others are printed whole when the batch is done, each after a line of
15 dashes. Streaming or not, the bytes on stdout are the same, and stdout holds nothing but the
samples (what was loaded is said on stderr). Each sample starts with the prompt; an empty prompt
starts from end-of-text (BPE, document corpora) or a newline (a char stream), and prints nothing.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import torch

from nanogpt.errors import DataError, InputError, NanoGPTError
from nanogpt.fileio import read_user_text
from nanogpt.generation import generate_stream

SEPARATOR = "-" * 15
"""The line between two samples on stdout (the seed's)."""

FILE_PREFIX = "FILE:"


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
    from nanogpt.spec.pretrained import NotPretrained, locate_weights

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
    from nanogpt.spec.tables import GPT2_NAMES
    from nanogpt.weights import hf_importer

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
    from nanogpt.checkpoint import checkpoint_for, checkpoint_paths

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
    from nanogpt.checkpoint import FORMAT, load_checkpoint
    from nanogpt.data.tokenizers import tokenizer_from_meta
    from nanogpt.weights import from_checkpoint

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
    from nanogpt.checkpoint import load_checkpoint

    from nanogpt.sharded_checkpoint import is_sharded_checkpoint, read_state

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


def pick_device_and_autocast(device: str, dtype: str) -> tuple[torch.device, Any]:
    """The `--device` ("auto": cuda if available, else cpu) and an autocast context for `--dtype`."""
    from nanogpt.dist import pick_device, pick_dtype
    from nanogpt.spec.tables import DEVICE

    if not re.fullmatch(DEVICE.regex, device):
        raise InputError(f"--device must be {DEVICE.means} (got {device!r})")
    dev = pick_device(device, None, setting="--device")
    precision = pick_dtype(dtype, dev)
    if precision == torch.float32:
        return dev, contextlib.nullcontext()
    return dev, torch.autocast(device_type=dev.type, dtype=precision)


# ------------------------------------------------------------------------------- generation


def start_ids(tokenizer: Any, start: str | None) -> list[int]:
    """The prompt's ids; with no prompt, end-of-text (BPE, document corpora) or a newline (a char stream).

    "<|endoftext|>" in a prompt is the end-of-text token itself.
    """
    if start:
        ids = tokenizer.encode(start, allowed_special=True)
        if ids:
            return ids
    if getattr(tokenizer, "eot_id", None) is not None:
        return [tokenizer.eot_id]
    try:
        return tokenizer.encode("\n")
    except InputError:  # a vocabulary without newlines: any token starts a sample
        return [0]


class IncrementalDecoder:
    """Decode one row's ids as they come, passing on text only once it ends in whole characters.

    A BPE token can end inside a multi-byte character; its text then ends in U+FFFD until the
    next token completes it, so that text waits. What is passed on adds up to `decode(all ids)`.
    """

    def __init__(self, tokenizer: Any, emit: Callable[[str], None]):
        self.tokenizer = tokenizer
        self.emit = emit
        self.pending: list[int] = []

    def push(self, token: int) -> None:
        self.pending.append(token)
        text = self.tokenizer.decode(self.pending)
        if not text.endswith("\ufffd"):
            self.emit(text)
            self.pending.clear()

    def close(self) -> None:
        if self.pending:
            self.emit(self.tokenizer.decode(self.pending))
            self.pending.clear()


@torch.no_grad()
def generate_texts(
    model: torch.nn.Module,
    tokenizer: Any,
    *,
    start: str | None,
    num_samples: int,
    max_new_tokens: int,
    seed: int,
    device: torch.device,
    temperature: float = 0.8,
    top_k: int | None = 200,
    top_p: float | None = None,
    stop_at_eot: bool = False,
    autocast: Any = None,
    on_text: Callable[[str], None] | None = None,
) -> list[str]:
    """`num_samples` continuations of `start`, generated as one batch; the same seed gives the same text.

    Returns the new text of each sample (not the prompt). With `stop_at_eot` a sample ends before
    its first end-of-text token. `on_text` receives the first sample's text piece by piece as its
    tokens are generated (whole characters only); the pieces add up to the first returned text.
    """
    prompt = start_ids(tokenizer, start)
    idx = torch.tensor([prompt] * num_samples, dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    eot = getattr(tokenizer, "eot_id", None) if stop_at_eot else None
    stream = IncrementalDecoder(tokenizer, on_text) if on_text is not None else None
    rows: list[list[int]] = [[] for _ in range(num_samples)]
    ended = [False] * num_samples
    with autocast or contextlib.nullcontext():
        # generate_stream puts the model in eval mode for the stream and restores it after
        steps = generate_stream(
            model, idx, max_new_tokens, temperature=temperature, top_k=top_k or None, top_p=top_p, eot_id=eot, generator=generator
        )
        with contextlib.closing(steps):  # an error here still closes the stream (and restores train mode)
            for step in steps:
                for row, token in enumerate(step.tolist()):
                    if ended[row]:
                        continue
                    if eot is not None and token == eot:
                        ended[row] = True
                        continue
                    rows[row].append(token)
                    if row == 0 and stream is not None:
                        stream.push(token)
    if stream is not None:
        stream.close()
    return [tokenizer.decode(row) for row in rows]


# ------------------------------------------------------------------------------------ the verb


def read_start(start: str) -> str:
    """The prompt `--start` gives: the text itself, or the contents of the file after `FILE:`
    (or `file:`, as data.source spells it)."""
    if not start[: len(FILE_PREFIX)].upper() == FILE_PREFIX:
        return start
    name = start[len(FILE_PREFIX):]
    if not name:
        raise InputError(f"--start {start!r} needs a path after '{start[:len(FILE_PREFIX)]}'")
    return read_user_text(name, f"--start {start!r}")


def check_sampling_flags(args: Any) -> None:
    """Reject flags out of range before anything is loaded, naming the flag (exit status 2)."""
    if args.num_samples < 1:
        raise InputError(f"--num-samples must be at least 1 (got {args.num_samples})")
    if args.max_new_tokens < 0:
        raise InputError(f"--max-new-tokens must be at least 0 (got {args.max_new_tokens})")
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise InputError(f"--temperature must be 0 (greedy) or above (got {args.temperature})")
    if args.top_k < 0:
        raise InputError(f"--top-k must be at least 1, or 0 to disable it (got {args.top_k})")
    if not (0.0 < args.top_p <= 1.0):
        raise InputError(f"--top-p must be in (0, 1], 1 disabling it (got {args.top_p})")
    if not 0 <= args.seed < 2**64:
        raise InputError(f"--seed must be in 0 .. 2**64-1 (got {args.seed})")


def say(text: str) -> None:
    """A line for the user on stderr (stdout is for the samples only)."""
    print(text, file=sys.stderr, flush=True)


def sample_command(args: Any) -> int:
    """`nanogpt sample SOURCE [...]`: print samples on stdout; returns the exit status."""
    check_sampling_flags(args)
    start = read_start(args.start)
    device, autocast = pick_device_and_autocast(args.device, args.dtype)
    loaded = load_model(args.source, which=args.checkpoint, tokenizer_meta=getattr(args, "tokenizer_meta", None))
    start_ids(loaded.tokenizer, start)  # a prompt the vocabulary cannot spell fails before anything is printed
    model = loaded.model.to(device)
    say(
        f"sampling from {loaded.description}: {model.num_params() / 1e6:.2f}M parameters, "
        f"{loaded.tokenizer.name} tokenizer, on {device}"
    )

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    prompt_text = start if start else ""
    write(prompt_text)
    try:
        texts = generate_texts(
            model, loaded.tokenizer, start=start, num_samples=args.num_samples, max_new_tokens=args.max_new_tokens,
            seed=args.seed, device=device, temperature=args.temperature, top_k=args.top_k or None,
            top_p=args.top_p if args.top_p < 1.0 else None, stop_at_eot=args.stop_at_eot, autocast=autocast,
            on_text=write,
        )
    except RuntimeError as e:
        if "probability tensor contains" not in str(e):
            raise
        # finite weights whose logits overflow (float16): multinomial refuses NaN probabilities
        raise NanoGPTError(
            f"{loaded.description}: its output became NaN or inf while sampling at {args.dtype} precision; "
            "try --dtype float32"
        ) from None
    write("\n")
    for text in texts[1:]:
        write(f"{SEPARATOR}\n{prompt_text}{text}\n")
    return 0
