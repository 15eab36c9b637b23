"""Where a model's weights come from, and the builders of the GPT and llama kinds.

One resolver (`nanogpt.config.pretrained.locate_weights`, torch-free, so `check` agrees with `run`)
decides what a weights name points to: a Hugging Face model directory, a run directory, a
checkpoint file, or a model of the Hugging Face hub. From there:

- this product's checkpoints hold the model's `arch()` record; `rebuild` turns it back into a
  model of any registered kind through the registry, and the saved weights load into it;
- a Hugging Face model is imported by the importer of its config's `model_type` (HF_IMPORTERS):
  OpenAI's GPT-2 (through transformers) into a GPT, its tensors transposed where needed; a
  Llama-architecture model (its safetensors files) into a Llama, whose names are already theirs;
- nanoGPT's `ckpt.pt` is imported into a GPT.

Every file is loaded with `weights_only=True`; weights that do not fit are an InputError naming
the tensor.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from collections.abc import Callable
from typing import Any, Optional

import attrs
import torch

from nanogpt.config import sizes
from nanogpt.checkpoints.state import FORMAT, load_checkpoint, state_mismatch
from nanogpt.checkpoints.catalog import checkpoint_for
from nanogpt.checkpoints.sharded import is_sharded_checkpoint
from nanogpt.errors import InputError
from nanogpt.models.llama import Llama, LlamaConfig
from nanogpt.models.gpt import GPT, GPTConfig
from nanogpt.config.pretrained import (
    HF_ARCHS,
    NotPretrained,
    hf_model_type,
    llama_arch_from_hf_config,
    locate_weights,
)
from nanogpt.config.tables import GPT2_NAMES, GPTSpec, LlamaSpec


def load_pretrained(
    init_from: str,
    *,
    dropout: float = 0.0,
    block_size: Optional[int] = None,
    pad_vocab_multiple: int = 1,
    vocab_size: Optional[int] = None,
    which: str = "best",
    hub_ids: bool = False,
) -> Any:
    """The model `init_from` names: a Hugging Face model (a gpt2* name, a directory, with `hub_ids`
    any hub id), a run directory (its `which` checkpoint), or a checkpoint file (this product's or
    nanoGPT's)."""
    try:
        weights = locate_weights(init_from, hub_ids=hub_ids)
    except NotPretrained as e:
        raise InputError(f"model.init_from {init_from!r}: {e}") from None
    if weights.kind in ("hub", "hf_dir"):
        return from_hf_any(init_from, dropout=dropout, block_size=block_size, pad_vocab_multiple=pad_vocab_multiple)
    return from_checkpoint(
        init_from, dropout=dropout, block_size=block_size, pad_vocab_multiple=pad_vocab_multiple,
        vocab_size=vocab_size, which=which,
    )


def from_checkpoint(
    path: str,
    *,
    dropout: float = 0.0,
    block_size: Optional[int] = None,
    pad_vocab_multiple: int = 1,
    vocab_size: Optional[int] = None,
    which: str = "best",
) -> Any:
    """This product's checkpoint file or run directory (`which` checkpoint: "best" or "latest"), or a
    nanoGPT `ckpt.pt` ({"model_args", "model"}). Loaded with weights_only; an unsafe pickle is refused.

    nanoGPT records no unpadded vocabulary; `vocab_size` (the tokenizer's) says how many of its
    rows are real when it trained with a padded table (50304 for GPT-2's 50257).
    """
    p = Path(path)
    if p.is_dir() and not is_sharded_checkpoint(p):  # a run directory
        p = checkpoint_for(p, which)
    state = load_checkpoint(p)
    if state.get("format") == FORMAT:
        model = _ours(state, p, dropout)
    elif isinstance(state.get("model_args"), dict) and isinstance(state.get("model"), dict):
        config, sd = _nanogpt(state, p, dropout, vocab_size, pad_vocab_multiple)
        model = _gpt_from_state_dict(config, sd, str(p))
    else:
        raise InputError(
            f"{str(p)!r} is neither a nanogpt checkpoint (format {FORMAT!r}) nor a nanoGPT ckpt.pt "
            f"(keys model_args and model); it has keys {sorted(map(str, state))[:8]}"
        )
    if block_size is not None:
        _crop_to(model, block_size, str(p))
    return model


# ------------------------------------------------------------------- this product's checkpoints


def rebuild(arch: dict[str, Any], *, dropout: float = 0.0, plugins: Any = (), source: str = "the checkpoint") -> Any:
    """An untrained model of the architecture an `arch()` record describes, built by its kind's builder.

    The record's keys that are fields of the kind's spec class make a `[model]` table with
    `init_from = "scratch"` and the given `dropout`; `vocab_size` is the builder's vocabulary. A kind
    that is not registered yet is looked for in `plugins` (the modules the run's spec named, as
    `run` imports them); still unknown, it is an InputError. Torch's global RNG is left as it was:
    the weights are overwritten next anyway.
    """
    from nanogpt.registry import MODELS, import_plugin

    arch = _current_arch(arch)
    kind = arch.get("kind")
    if isinstance(kind, str) and MODELS.spec_class(kind) is None and isinstance(plugins, (list, tuple)):
        for module in plugins:
            if isinstance(module, str):
                import_plugin(module)
    spec_class = MODELS.spec_class(kind) if isinstance(kind, str) else None
    if spec_class is None:
        raise InputError(
            f"{source}: its model kind {kind!r} is not registered (known: {', '.join(MODELS.kinds())}); "
            "import the plugin that registers it first (a run names it in its spec's `plugins`)"
        )
    fields = {f.name for f in attrs.fields(spec_class)}
    table = {k: v for k, v in arch.items() if k in fields and k not in ("kind", "init_from", "dropout")}
    try:
        spec = spec_class(**table, init_from="scratch", dropout=dropout)
        with torch.random.fork_rng(devices=[]):
            return MODELS.build(spec, vocab_size=arch["vocab_size"])
    except KeyError as e:
        raise InputError(f"{source}: model_arch lacks {e.args[0]!r}") from None
    except (ValueError, TypeError) as e:
        raise InputError(f"{source}: bad model_arch: {e}") from None


def _current_arch(arch: dict[str, Any]) -> dict[str, Any]:
    """Checkpoints written before the record named its kind are GPTs that recorded their padded table."""
    if "kind" in arch:
        return arch
    arch = {**arch, "kind": "gpt"}
    padded = arch.pop("padded_vocab_size", None)
    if isinstance(padded, int) and padded != arch.get("vocab_size"):
        arch["pad_vocab_multiple"] = padded
    else:
        arch.setdefault("pad_vocab_multiple", 1)
    return arch


def _ours(state: dict[str, Any], path: Path, dropout: float) -> Any:
    arch = state.get("model_arch")
    sd = state.get("model")
    if not isinstance(arch, dict) or not isinstance(sd, dict):
        raise InputError(f"checkpoint {str(path)!r} lacks model_arch or model")
    spec = state.get("spec")
    plugins = spec.get("plugins", ()) if isinstance(spec, dict) else ()
    model = rebuild(arch, dropout=dropout, plugins=plugins, source=f"checkpoint {str(path)!r}")
    sd = _strip_prefixes(sd)
    problem = state_mismatch(model.state_dict(), sd)
    if problem is not None:
        raise InputError(f"{str(path)!r} does not hold this architecture's weights: {problem}")
    model.load_state_dict(sd, strict=True)
    return model


# ------------------------------------------------------------------ GPT-2 and nanoGPT weights


def from_hf(
    name_or_dir: str,
    *,
    dropout: float = 0.0,
    block_size: Optional[int] = None,
    pad_vocab_multiple: int = 1,
) -> GPT:
    """OpenAI's GPT-2 by name ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"; from the Hugging Face
    hub, or its local cache) or a local Hugging Face GPT-2 model directory (never the network)."""
    local = Path(name_or_dir).is_dir()
    if not local and name_or_dir not in GPT2_NAMES:
        raise InputError(
            f"{name_or_dir!r} is neither a Hugging Face model directory nor one of {', '.join(GPT2_NAMES)}"
        )
    try:
        import transformers
        from transformers import GPT2LMHeadModel
    except ImportError as e:  # pragma: no cover - transformers is a dependency
        raise InputError(f"loading {name_or_dir!r} needs the transformers package ({e})") from None
    if not local:
        _check_hub_within_reach(name_or_dir)
    # float32 whatever the files hold: training casts through autocast, not through the weights
    dtype_arg = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    try:
        model_hf = GPT2LMHeadModel.from_pretrained(
            name_or_dir, local_files_only=local, **{dtype_arg: torch.float32}
        )
    except (OSError, ValueError) as e:
        where = "the directory" if local else "the Hugging Face hub (is the network reachable?)"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"cannot load GPT-2 weights {name_or_dir!r} from {where}: {first}") from None
    hf = model_hf.config
    _check_hf_config(hf, name_or_dir)
    tie = bool(getattr(hf, "tie_word_embeddings", True))
    config = GPTConfig(
        n_layer=hf.n_layer,
        n_head=hf.n_head,
        n_embd=hf.n_embd,
        block_size=hf.n_positions,
        vocab_size=hf.vocab_size,
        padded_vocab_size=sizes.padded_vocab(hf.vocab_size, pad_vocab_multiple),
        dropout=dropout,
        bias=True,
        tie_weights=tie,
    )
    # basically the openai checkpoints use a "Conv1D" module, but we only want to use a vanilla Linear
    # this means that we have to transpose these weights when we import them
    transposed = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    sd = {}
    for key, tensor in model_hf.state_dict().items():
        if _MASK_BUFFER.search(key):
            continue  # the causal masks old transformers versions saved; SDPA needs none
        sd[key] = tensor.t() if key.endswith(transposed) else tensor
    if tie:
        sd["lm_head.weight"] = sd["transformer.wte.weight"]
    del model_hf
    model = _gpt_from_state_dict(config, sd, name_or_dir)
    if block_size is not None:
        _crop_to(model, block_size, name_or_dir)
    return model


def _gpt_from_state_dict(config: GPTConfig, sd: dict[str, torch.Tensor], source: str) -> GPT:
    """A GPT with exactly the tensors of `sd`, its token table and head padded with zero rows to
    `padded_vocab_size` (no token id points at them, no logit is read); else an InputError."""
    sd = dict(sd)
    for key in ("transformer.wte.weight", "lm_head.weight"):
        table = sd.get(key)
        if table is not None and table.dim() == 2 and table.size(0) < config.padded_vocab_size:
            pad = table.new_zeros(config.padded_vocab_size - table.size(0), table.size(1))
            sd[key] = torch.cat((table, pad))
    return _model_with_weights(GPT, config, sd, source)


def _model_with_weights(model_class: type, config: Any, sd: dict[str, torch.Tensor], source: str) -> Any:
    """`model_class(config)` holding exactly the tensors of `sd`; a missing, extra or misshapen tensor
    is an InputError. Built on the meta device, so no time goes into initialising weights that are
    overwritten next; `to_empty` then gives every module a tensor of its own, so the model ties its
    tables and computes its buffers again."""
    with torch.device("meta"):
        model = model_class(config)
    model = model.to_empty(device="cpu")
    model.tie_weights_and_buffers()
    problem = state_mismatch(model.state_dict(), sd)
    if problem is not None:
        raise InputError(f"{source!r} does not hold this architecture's weights: {problem}")
    model.load_state_dict(sd, strict=True)
    return model


_MASK_BUFFER = re.compile(r"(^|\.)h\.\d+\.attn\.(bias|masked_bias)$")
"""The causal-mask buffers of the seed's attention and of old transformers (not weights)."""
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")
"""What torch.compile and DDP put in front of parameter names."""


def _strip_prefixes(sd: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in sd.items():
        changed = True
        while changed:
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def _nanogpt(
    state: dict[str, Any], path: Path, dropout: float, vocab_size: Optional[int], pad_vocab_multiple: int
) -> tuple[GPTConfig, dict[str, torch.Tensor]]:
    """nanoGPT's ckpt.pt: model_args + a state dict, maybe `_orig_mod.`-prefixed (compiled), maybe untied (Jan 2023)."""
    args = state["model_args"]
    sd = {k: v for k, v in _strip_prefixes(state["model"]).items() if not _MASK_BUFFER.search(k)}
    wte, head = sd.get("transformer.wte.weight"), sd.get("lm_head.weight")
    if not isinstance(wte, torch.Tensor) or wte.dim() != 2:
        raise InputError(f"nanoGPT checkpoint {str(path)!r} has no transformer.wte.weight matrix")
    if head is None:
        sd["lm_head.weight"] = head = wte
    # tied models saved the one matrix under both names; the January 2023 model had two
    tied = head is wte or (head.shape == wte.shape and torch.equal(head, wte))
    try:
        rows = args["vocab_size"]
        real = rows
        if vocab_size is not None and vocab_size < rows and sizes.padded_vocab(vocab_size, 64) == rows:
            real = vocab_size  # nanoGPT's habit: GPT-2's 50257 padded to 50304 by hand
        config = GPTConfig(
            n_layer=args["n_layer"],
            n_head=args["n_head"],
            n_embd=args["n_embd"],
            block_size=args["block_size"],
            vocab_size=real,
            padded_vocab_size=max(rows, sizes.padded_vocab(real, pad_vocab_multiple)),
            dropout=dropout,
            bias=args.get("bias", True),  # January 2023 checkpoints predate the flag: biases everywhere
            tie_weights=tied,
        )
    except KeyError as e:
        raise InputError(f"nanoGPT checkpoint {str(path)!r}: model_args lacks {e.args[0]!r}") from None
    except (ValueError, TypeError) as e:
        raise InputError(f"nanoGPT checkpoint {str(path)!r}: bad model_args: {e}") from None
    if wte.size(0) != rows:
        raise InputError(
            f"nanoGPT checkpoint {str(path)!r}: model_args says vocab_size {rows}, "
            f"but transformer.wte.weight has {wte.size(0)} rows"
        )
    return config, sd


def _crop_to(model: Any, block_size: int, source: str) -> None:
    if block_size > model.context_length:
        raise InputError(
            f"model.block_size {block_size} exceeds the block size of {source!r} ({model.context_length}); "
            "it can only be cropped"
        )
    model.crop_block_size(block_size)


def _check_hub_within_reach(name: str, what: str = "GPT-2") -> None:
    """Fail at once, not after the hub client's ~23 s of retries, when weights that are not in the
    Hugging Face cache would need a hub this machine cannot even look up."""
    import socket
    import urllib.parse

    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return  # cached: transformers finds it without the network
    host = urllib.parse.urlparse(constants.ENDPOINT).hostname
    if constants.HF_HUB_OFFLINE:
        why = "HF_HUB_OFFLINE is set"
    else:
        try:
            socket.getaddrinfo(host, 443)
            return
        except (OSError, UnicodeError) as e:
            why = f"{host} cannot be looked up: {e}; HF_HUB_OFFLINE=1 says so at once to every Hugging Face tool"
    raise InputError(
        f"cannot load {what} weights {name!r}: they are not in the Hugging Face cache ({constants.HF_HUB_CACHE}) "
        f"and the Hugging Face hub is out of reach ({why}). Offline, name a local Hugging Face {what} "
        "directory instead (one `save_pretrained` wrote), or fill the cache on a machine with internet"
    )


def _check_hf_config(hf: Any, source: str) -> None:
    """Refuse Hugging Face GPT-2 variants this architecture would compute differently."""
    problems = []
    if getattr(hf, "model_type", "gpt2") != "gpt2":
        problems.append(f"model_type is {hf.model_type!r}, not 'gpt2'")
    act = getattr(hf, "activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        problems.append(f"activation_function {act!r} (only GPT-2's tanh GELU, 'gelu_new')")
    inner = getattr(hf, "n_inner", None)
    if inner is not None and inner != 4 * hf.n_embd:
        problems.append(f"n_inner {inner} (the MLP must be 4 * n_embd = {4 * hf.n_embd} wide)")
    eps = getattr(hf, "layer_norm_epsilon", 1e-5)
    if eps != 1e-5:
        problems.append(f"layer_norm_epsilon {eps} (must be 1e-5)")
    if not getattr(hf, "scale_attn_weights", True) or getattr(hf, "scale_attn_by_inverse_layer_idx", False):
        problems.append("attention scaled other than by 1/sqrt(head size)")
    if getattr(hf, "add_cross_attention", False):
        problems.append("cross-attention layers")
    if problems:
        raise InputError(f"{source!r} is a GPT-2 variant this model does not compute: {'; '.join(problems)}")


# ------------------------------------------------------------------ Hugging Face Llama weights


def from_hf_llama(
    name_or_dir: str, *, dropout: float = 0.0, block_size: Optional[int] = None, pad_vocab_multiple: int = 1
) -> Llama:
    """A Hugging Face Llama-architecture model: a local directory (config.json + safetensors),
    or a hub id (downloaded into the Hugging Face cache where the network allows).

    A Llama's token table is used as its files hold it: `pad_vocab_multiple` must be 1."""
    if pad_vocab_multiple != 1:
        raise InputError(f"{name_or_dir!r}: a Llama's token table is not padded (pad_vocab_multiple {pad_vocab_multiple}, must be 1)")
    directory = _hf_directory(name_or_dir)
    try:
        cfg = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        arch = llama_arch_from_hf_config(cfg, name_or_dir)
    except (OSError, ValueError) as e:  # NotPretrained and JSONDecodeError are ValueErrors
        raise InputError(f"cannot load Llama weights {name_or_dir!r}: {e}") from None
    config = LlamaConfig(**arch, dropout=dropout)
    # float32 whatever the files hold: training casts through autocast, not through the weights
    sd = {key: t.float() for key, t in _read_safetensors(directory, name_or_dir).items()}
    sd = {k: v for k, v in sd.items() if not k.endswith("rotary_emb.inv_freq")}  # older transformers saved it
    if config.tie_embeddings and "model.embed_tokens.weight" in sd:
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]  # save_pretrained writes a tied matrix once
    model = _model_with_weights(Llama, config, sd, name_or_dir)
    if block_size is not None:
        if block_size > config.block_size:
            raise InputError(
                f"model.block_size {block_size} exceeds the context of {name_or_dir!r} ({config.block_size})"
            )
        model.crop_block_size(block_size)
    return model


def _hf_directory(name_or_dir: str) -> Path:
    """The local directory of a Hugging Face model: the path itself, or the hub id's snapshot."""
    path = Path(name_or_dir)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError(f"{name_or_dir!r} is not a Hugging Face model directory: it has no config.json")
        return path
    from huggingface_hub import snapshot_download

    _check_hub_within_reach(name_or_dir, what="Llama")
    try:
        return Path(snapshot_download(name_or_dir, allow_patterns=["*.json", "*.safetensors"]))
    except Exception as e:  # noqa: BLE001 - the hub client raises many kinds; all mean "not loadable"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"cannot load {name_or_dir!r} from the Hugging Face hub: {first}") from None


def _read_safetensors(directory: Path, source: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as e:
            raise InputError(f"{source!r}: cannot read {index.name}: {e}") from None
        files = [directory / s for s in shards]
    else:
        files = [directory / "model.safetensors"]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise InputError(
            f"{source!r} has no {', '.join(missing)}: Llama weights are read from safetensors files only "
            "(a pytorch_model.bin would need unpickling)"
        )
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            sd.update(load_file(str(f)))
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for bad files
            raise InputError(f"{source!r}: {f.name} is not a readable safetensors file: {e}") from None
    return sd


# ------------------------------------------------------------- any Hugging Face model we compute


@attrs.frozen
class HFImporter:
    """How a Hugging Face `model_type` becomes a model of this product."""

    load: Callable[..., Any]
    """`load(name_or_dir, *, dropout, block_size, pad_vocab_multiple)`: the model, float32, on the CPU."""
    own_tokenizer: bool
    """Whether its tokenizer is the model's own tokenizer.json (a Llama's), or GPT-2's BPE whatever
    files come with it (GPT-2's; its hub names bring none): the spec half's HF_ARCHS says, for `check`."""


HF_IMPORTERS: dict[str, HFImporter] = {
    "gpt2": HFImporter(from_hf, own_tokenizer=HF_ARCHS["gpt2"].own_tokenizer),
    "llama": HFImporter(from_hf_llama, own_tokenizer=HF_ARCHS["llama"].own_tokenizer),
}
"""The Hugging Face architectures this product computes, by their config.json's `model_type`."""


def hf_importer(name_or_dir: str) -> HFImporter:
    """The importer of the Hugging Face model `name_or_dir` names (a directory, a GPT-2 name or a hub id)."""
    if not Path(name_or_dir).is_dir() and name_or_dir not in GPT2_NAMES:
        _check_hub_within_reach(name_or_dir, what="Hugging Face model")  # at once, not after the client's retries
    try:
        model_type = hf_model_type(name_or_dir)
    except NotPretrained as e:
        raise InputError(f"cannot load {name_or_dir!r}: {e}") from None
    importer = HF_IMPORTERS.get(model_type)
    if importer is None:
        raise InputError(
            f"{name_or_dir!r} holds a {model_type!r} model (config.json model_type); this product computes "
            f"{', '.join(repr(t) for t in HF_IMPORTERS)}"
        )
    return importer


def from_hf_any(name_or_dir: str, **options: Any) -> Any:
    """The Hugging Face model `name_or_dir` names, imported by its `model_type`'s importer."""
    return hf_importer(name_or_dir).load(name_or_dir, **options)


# ------------------------------------------------------------------------- the GPT builder


def _check_dataset_vocab(vocab_size: Any) -> None:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise InputError(f"the dataset's vocabulary size must be a positive integer (got {vocab_size!r})")


def _scratch_vocab(spec: Any, vocab_size: int) -> int:
    """The vocabulary of a model built from scratch for a dataset of `vocab_size` token ids: the
    spec's `vocab_size` when it states one (never smaller than the dataset's), else the dataset's."""
    model_vocab = vocab_size if spec.vocab_size is None else spec.vocab_size
    if model_vocab < vocab_size:
        raise InputError(
            f"model.vocab_size ({model_vocab}) is smaller than the dataset's vocabulary ({vocab_size}): "
            "token ids would fall outside the embedding; leave model.vocab_size out to take the dataset's"
        )
    return model_vocab


def build_gpt(spec: GPTSpec, *, vocab_size: int) -> GPT:
    """The model a `[model] kind = "gpt"` table describes, for a dataset of `vocab_size` token ids.

    From scratch it is initialised from torch's global RNG (the caller seeds it). From pretrained
    weights, the architecture is the weights'; dropout comes from the spec and the position table is
    cropped to spec.block_size. Weights that disagree with the spec or the dataset are an InputError.
    """
    _check_dataset_vocab(vocab_size)
    if spec.init_from == "scratch":
        return GPT(GPTConfig.from_spec(spec, _scratch_vocab(spec, vocab_size)))

    model = load_pretrained(
        spec.init_from,
        dropout=spec.dropout,
        block_size=spec.block_size,
        pad_vocab_multiple=spec.pad_vocab_multiple,
        vocab_size=vocab_size,
    )
    if not isinstance(model, GPT):
        raise InputError(f"model.init_from {spec.init_from!r} holds a {model.arch().get('kind')!r} model, not a GPT (model.kind = \"gpt\")")
    loaded = model.config
    if loaded.vocab_size != vocab_size:
        raise InputError(
            f"model.init_from {spec.init_from!r} has a vocabulary of {loaded.vocab_size} tokens, but the dataset has "
            f"{vocab_size}: pretrained weights need the tokenizer they were trained with (for GPT-2: data.tokenizer = \"gpt2\")"
        )
    stated = {"n_layer": spec.n_layer, "n_head": spec.n_head, "n_embd": spec.n_embd, "bias": spec.bias}
    if spec.vocab_size is not None:
        stated["vocab_size"] = spec.vocab_size
    wrong = [
        f"model.{k} is {v!r} but the weights have {getattr(loaded, k)!r}"
        for k, v in stated.items()
        if getattr(loaded, k) != v and not (k == "vocab_size" and v == loaded.padded_vocab_size)
    ]
    if wrong:
        raise InputError(f"model.init_from {spec.init_from!r} does not match the spec: {'; '.join(wrong)}")
    return model


# ----------------------------------------------------------------------- the llama builder


def build_llama(spec: LlamaSpec, *, vocab_size: int) -> Llama:
    """The model a `[model] kind = "llama"` table describes, for a dataset of `vocab_size` token ids.

    From scratch it is initialised from torch's global RNG (the caller seeds it); from pretrained
    weights (a Hugging Face Llama, a hub id, a llama run or checkpoint) its architecture is the
    weights', dropout comes from the spec and the context is cropped to spec.block_size. Weights
    that disagree with the spec or the dataset are an InputError.
    """
    _check_dataset_vocab(vocab_size)
    if spec.init_from == "scratch":
        return Llama(LlamaConfig.from_spec(spec, _scratch_vocab(spec, vocab_size)))
    model = load_pretrained(spec.init_from, dropout=spec.dropout, block_size=spec.block_size, hub_ids=True)
    if not isinstance(model, Llama):
        raise InputError(f"model.init_from {spec.init_from!r} holds a {model.arch().get('kind')!r} model, not a llama (model.kind = \"llama\")")
    loaded = model.arch()
    # `check` fills and compares these from the weights' config; a hub model it could not reach is compared here
    wrong = [
        f"model.{k} is {getattr(spec, k)!r} but the weights have {loaded[k]!r}"
        for k in LlamaSpec.ARCH_FIELDS
        if k not in ("block_size", "vocab_size") and getattr(spec, k) is not None and getattr(spec, k) != loaded[k]
    ]
    if wrong:
        raise InputError(f"model.init_from {spec.init_from!r} does not match the spec: {'; '.join(wrong)}")
    if model.config.vocab_size < vocab_size:
        raise InputError(
            f"model.init_from {spec.init_from!r} has a vocabulary of {model.config.vocab_size} tokens, but the dataset "
            f"has {vocab_size}: pretrained weights need the tokenizer they were trained with (data.tokenizer = \"hf:...\")"
        )
    return model
