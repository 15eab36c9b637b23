"""`nanogpt export RUN_OR_CHECKPOINT --format hf -o DIR`: a model as Hugging Face tools take it.

The directory is what `save_pretrained` writes (config.json, model.safetensors, and the tokenizer
files when the model has a tokenizer), so `AutoModelForCausalLM.from_pretrained(DIR)` gives the
same logits as this product, and lm-eval-harness, vLLM or the Hub take it as it is:

- a GPT becomes a GPT2LMHeadModel: nn.Linear weights transposed into GPT-2's Conv1D layout, the
  vocabulary's padding rows cut off, and zero biases where the model was trained without them
  (GPT-2 has no switch for that; a zero bias adds nothing); of the speedrun's options it takes
  `mlp = "relu2"` (transformers' "relu2" activation) and `zero_init_residual` (only the start
  differs), and refuses, by name, those GPT-2's blocks cannot compute (rope, rmsnorm, qk_norm,
  swiglu, logit_softcap);
- a Llama becomes a LlamaForCausalLM: the parameter names are already transformers'.

Tokenizers: GPT-2's BPE is rebuilt from the files the gpt2 tokenizer reads (offline); an hf:
tokenizer is its own tokenizer.json; a char vocabulary becomes a one-character-per-token
WordLevel tokenizer, so text round-trips through transformers as through `sample`.

The directory is written under a temporary name and renamed into place: an interrupted export
leaves no directory that looks whole. An existing non-empty DIR is refused.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch

from nanogpt.errors import InputError

FORMATS = ("hf",)


def export_command(args: argparse.Namespace) -> int:
    from nanogpt.models.loading import load_model

    if args.format not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)} (got {args.format!r})")
    out = Path(args.output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"-o {args.output!r} already exists and is not an empty directory; name a new one")
    loaded = load_model(args.source, which=args.checkpoint)
    print(f"exporting {loaded.description}", file=sys.stderr)
    export_hf(loaded.model, loaded.tokenizer, out)
    print(out)
    return 0


def export_hf(model: Any, tokenizer: Any, out: Path) -> None:
    """Write `model` (a GPT or a Llama) and its tokenizer to `out` as a transformers model directory."""
    hf = to_transformers(model)
    fast = to_transformers_tokenizer(tokenizer) if tokenizer is not None else None
    if fast is not None:
        for key in ("eos_token_id", "bos_token_id"):
            setattr(hf.config, key, getattr(fast, key))
            setattr(hf.generation_config, key, getattr(fast, key))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        hf.save_pretrained(tmp)
        if fast is not None:
            fast.save_pretrained(tmp)
        if out.exists():
            out.rmdir()  # empty, checked by the caller
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def to_transformers(model: Any) -> Any:
    """The transformers model with `model`'s weights (float32), in eval mode, made by its kind's
    exporter (HF_EXPORTERS, as weights.HF_IMPORTERS brings models in)."""
    kind = model.arch().get("kind") if callable(getattr(model, "arch", None)) else None
    exporter = HF_EXPORTERS.get(kind)
    if exporter is None:
        raise InputError(
            f"cannot export a {type(model).__name__} (model kind {kind!r}): only "
            f"{', '.join(repr(k) for k in HF_EXPORTERS)} models have a Hugging Face form"
        )
    return exporter(model)


def _to_llama(model: Any) -> Any:
    import transformers

    c = model.config
    config = transformers.LlamaConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.n_embd,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.n_layer,
        num_attention_heads=c.n_head,
        num_key_value_heads=c.n_kv_head,
        head_dim=c.head_size,
        max_position_embeddings=c.block_size,
        rms_norm_eps=c.norm_eps,
        rope_theta=c.rope_theta,
        tie_word_embeddings=c.tie_embeddings,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    hf = transformers.LlamaForCausalLM(config)
    _load_exactly(hf, {k: v.detach().float() for k, v in model.state_dict().items()})
    return hf.eval()


GPT2_CANNOT = (
    ("position", "learned", "GPT-2 learns a table of positions"),
    ("norm", "layernorm", "GPT-2's norms are LayerNorms"),
    ("qk_norm", False, "GPT-2 has no norm on queries and keys"),
    ("logit_softcap", None, "GPT-2's logits are not capped"),
)
"""(option, the only value GPT2LMHeadModel computes, why) for the GPT kind's options; `mlp` is checked apart."""


def _gpt2_refusals(c: Any) -> list[str]:
    """The options of a GPT's config that GPT2LMHeadModel cannot compute, each with why; [] when it can."""
    import json

    problems = [f"model.{name} = {json.dumps(getattr(c, name))} ({why})"
                for name, plain, why in GPT2_CANNOT if getattr(c, name, plain) != plain]
    if getattr(c, "mlp", "gelu") not in ("gelu", "relu2"):
        problems.append(f"model.mlp = {json.dumps(c.mlp)} (GPT-2's MLP has two matrices and one activation)")
    return problems


def _to_gpt2(model: Any) -> Any:
    import transformers

    c = model.config
    refused = _gpt2_refusals(c)
    if refused:
        raise InputError(
            f"cannot export this GPT as a Hugging Face GPT2LMHeadModel, which cannot compute {'; '.join(refused)}; "
            "a model with these options has no Hugging Face form here (it samples and evaluates with `nanogpt sample` "
            "and `nanogpt perplexity`)"
        )
    config = transformers.GPT2Config(
        vocab_size=c.vocab_size,
        n_positions=c.block_size,
        n_embd=c.n_embd,
        n_layer=c.n_layer,
        n_head=c.n_head,
        activation_function="relu2" if getattr(c, "mlp", "gelu") == "relu2" else "gelu_new",
        layer_norm_epsilon=1e-5,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=c.tie_weights,
        bos_token_id=None,
        eos_token_id=None,
    )
    hf = transformers.GPT2LMHeadModel(config)
    ours = {k: v.detach().float() for k, v in model.state_dict().items()}
    transposed = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    sd = {}
    for key, target in hf.state_dict().items():
        if key in ours:
            tensor = ours[key].t() if key.endswith(transposed) else ours[key]
            if key in ("transformer.wte.weight", "lm_head.weight"):
                tensor = tensor[: c.vocab_size]  # the padding rows no token id reaches
            sd[key] = tensor
        elif key.endswith(".bias") and not c.bias:
            sd[key] = torch.zeros_like(target)
    _load_exactly(hf, sd)
    return hf.eval()


HF_EXPORTERS: dict[str, Callable[[Any], Any]] = {
    "gpt": _to_gpt2,
    "llama": _to_llama,
}
"""The model kinds that have a Hugging Face form: kind -> the function that makes its transformers model."""


def _load_exactly(hf: Any, sd: dict[str, torch.Tensor]) -> None:
    """Load `sd` into `hf`, every tensor accounted for (a tied head is one tensor under two names)."""
    expected = hf.state_dict()
    missing = [k for k in expected if k not in sd]
    extra = [k for k in sd if k not in expected]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(expected[k].shape)}" for k in sd if k in expected and sd[k].shape != expected[k].shape]
    if missing or extra or shapes:
        raise InputError(f"the weights do not map onto {type(hf).__name__}: missing {missing[:3]}, extra {extra[:3]}, shapes {shapes[:3]}")
    hf.load_state_dict(sd, strict=True)
    if getattr(hf.config, "tie_word_embeddings", False):
        hf.tie_weights()


def to_transformers_tokenizer(tokenizer: Any) -> Any:
    """A transformers PreTrainedTokenizerFast that gives our tokenizer's ids."""
    import transformers
    from tokenizers import Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as RustTokenizer

    from nanogpt.data.tokenizers import ENDOFTEXT, CharTokenizer, GPT2Tokenizer, HFTokenizer, gpt2_bpe_files

    special: dict[str, str] = {}
    if isinstance(tokenizer, HFTokenizer):
        rust = RustTokenizer.from_str(tokenizer.tokenizer_json)
        if tokenizer.eot_id is not None:
            special["eos_token"] = rust.id_to_token(tokenizer.eot_id)
        if tokenizer.bos_id is not None:
            special["bos_token"] = rust.id_to_token(tokenizer.bos_id)
    elif isinstance(tokenizer, GPT2Tokenizer):
        files = gpt2_bpe_files()
        rust = RustTokenizer(models.BPE.from_file(str(files["encoder.json"]), str(files["vocab.bpe"])))
        rust.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        rust.decoder = decoders.ByteLevel()
        special = {"eos_token": ENDOFTEXT, "bos_token": ENDOFTEXT}
    elif isinstance(tokenizer, CharTokenizer):
        vocab = {ch: i for i, ch in enumerate(tokenizer.chars)}
        if tokenizer.eot_id is not None:
            vocab[ENDOFTEXT] = tokenizer.eot_id
            special = {"eos_token": ENDOFTEXT}
        rust = RustTokenizer(models.WordLevel(vocab=vocab, unk_token=None))
        rust.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one token per character
        rust.decoder = decoders.Fuse()  # and no separator between them
    else:
        raise InputError(f"cannot export the {getattr(tokenizer, 'name', type(tokenizer).__name__)!r} tokenizer")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=rust, **special)
    if special:  # registered as special so that their text maps to their id, as `sample`'s prompts do
        fast.add_special_tokens({k: v for k, v in special.items()})
    return fast
