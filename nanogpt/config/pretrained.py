"""The architecture of the weights `model.init_from` names, read without torch.

Fields a spec leaves out come from here; fields it states must agree (PRODUCT.md). Reading is
metadata only: GPT-2's published sizes, a Hugging Face `config.json`, a run's `manifest.json`, or
the pickle header of a checkpoint file read by an unpickler that builds nothing but plain data.
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from pathlib import Path
from collections.abc import Callable
from typing import Any, Literal, Optional

import attrs

from nanogpt.config.tables import GPT2_NAMES, GPTSpec, ModelSpec

GPT2_ARCHS: dict[str, dict[str, Any]] = {
    name: dict(n_layer=L, n_head=H, n_embd=C, block_size=1024, vocab_size=50257, bias=True)
    for name, (L, H, C) in {
        "gpt2": (12, 12, 768),  # 124M
        "gpt2-medium": (24, 16, 1024),  # 350M
        "gpt2-large": (36, 20, 1280),  # 774M
        "gpt2-xl": (48, 25, 1600),  # 1558M
    }.items()
}
assert set(GPT2_ARCHS) == set(GPT2_NAMES)


class NotPretrained(ValueError):
    """`init_from` names nothing that holds weights; the message says what was found."""


RUN_MARKERS = ("manifest.json", "spec.toml", "checkpoints")
SHARDED_CHECKPOINT_FILES = ("state.pt", ".metadata")
"""What makes a directory a sharded checkpoint (nanogpt.checkpoints.sharded): its `state.pt` holds the
architecture record, as a checkpoint file does."""
"""What makes a directory a run directory (a run killed early may have only some of them)."""


@attrs.frozen
class WeightsName:
    """What a weights name (`model.init_from`, the source `sample` and `perplexity` take) points to."""

    kind: Literal["hub", "hf_dir", "run", "checkpoint"]
    """A GPT-2 name of the Hugging Face hub, a Hugging Face model directory, a run directory, or a
    checkpoint file (this product's or nanoGPT's `ckpt.pt`)."""
    name: str
    """The name as given."""

    @property
    def path(self) -> Path:
        return Path(self.name)


def locate_weights(name: str, *, hub_ids: bool = False) -> WeightsName:
    """The one place that decides what a weights name points to.

    What is on disk comes first (as in transformers: a local folder named gpt2 is that folder),
    then GPT-2's names; with `hub_ids`, any other `owner/name` that is not on disk is a model of
    the Hugging Face hub (a llama's init_from, `sample`'s source). NotPretrained when it names
    nothing that holds weights.
    """
    path = Path(name)
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except (OSError, ValueError):  # a name too long for the file system is no file either
        is_dir = is_file = False
    if is_dir:
        if (path / "config.json").is_file():
            return WeightsName("hf_dir", name)
        if all((path / f).is_file() for f in SHARDED_CHECKPOINT_FILES):
            return WeightsName("checkpoint", name)
        if any((path / marker).exists() for marker in RUN_MARKERS):
            return WeightsName("run", name)
        raise NotPretrained(
            f"directory {name!r} holds neither a Hugging Face model (config.json) "
            "nor a run (manifest.json)"
        )
    if is_file:
        return WeightsName("checkpoint", name)
    if name in GPT2_NAMES or (hub_ids and HUB_ID.fullmatch(name)):
        return WeightsName("hub", name)
    known = ", ".join(repr(n) for n in ("scratch", *GPT2_NAMES))
    hub = ", or a Hugging Face hub id (owner/name)" if hub_ids else ""
    raise NotPretrained(f"no such file or directory {name!r} (or one of {known}{hub})")


def hf_model_type(name: str) -> str:
    """The `model_type` of the Hugging Face model a weights name of kind "hub" or "hf_dir" points to:
    GPT-2's names are "gpt2"; otherwise its config.json's (a config without one is GPT-2's, as
    `gpt2_arch_from_hf_config` reads it). A hub id's config.json comes from the cache, else the hub."""
    if name in GPT2_NAMES and not Path(name).is_dir():
        return "gpt2"
    config = Path(name) / "config.json"
    cfg = _read_json(config if config.is_file() else _hub_config(name))
    model_type = cfg.get("model_type") or "gpt2"
    return model_type if isinstance(model_type, str) else repr(model_type)


def arch_of(init_from: str, model: type[ModelSpec] = GPTSpec) -> dict[str, Any]:
    """The architecture fields (`model.ARCH_FIELDS`, a subset of them where the weights record
    fewer) of the weights `init_from` names, for a spec of the model kind `model`.

    A Hugging Face model is read by the reader of the kind's HF_MODEL_TYPE (HF_ARCHS); a run,
    or a checkpoint inside one, by its manifest; any other checkpoint by its pickle header. Weights
    of another kind are NotPretrained, naming the kind they hold. A field of the kind's
    UNRECORDED_ARCH_DEFAULTS the weights do not record is its default: GPT-2's weights compute
    learned positions and LayerNorm, so a spec stating rope for them is a disagreement, not a
    model silently built without it.
    """
    arch = _recorded_arch(init_from, model)
    defaults = {f.name: f.default for f in attrs.fields(model)}
    return {**{name: defaults[name] for name in model.UNRECORDED_ARCH_DEFAULTS}, **arch}


def _recorded_arch(init_from: str, model: type[ModelSpec]) -> dict[str, Any]:
    hf = HF_ARCHS.get(model.HF_MODEL_TYPE or "")
    weights = locate_weights(init_from, hub_ids=hf is not None and hf.hub_names is None)
    path = weights.path
    if weights.kind in ("hub", "hf_dir") and hf is None:
        raise NotPretrained(f"{init_from!r} is a Hugging Face model; model kind {_kind_of(model)!r} reads none")
    if weights.kind == "hub":
        if hf.hub_names is not None:
            return dict(hf.hub_names[init_from])
        return hf.from_config(_read_json(_hub_config(init_from)), init_from)
    if weights.kind == "hf_dir":
        return hf.from_config(_read_json(path / "config.json"), init_from)
    if weights.kind == "run":
        return _arch_from_manifest(path / "manifest.json", model)
    run_dir = path.parent.parent
    if path.parent.name == "checkpoints" and (run_dir / "manifest.json").is_file():
        return _arch_from_manifest(run_dir / "manifest.json", model)
    return _arch_from_checkpoint(path, model)


def _kind_of(model: type[ModelSpec]) -> str:
    """The `kind` a model spec class registers under (its `kind` field's default)."""
    return attrs.fields_dict(model)["kind"].default


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NotPretrained(f"cannot read {str(path)!r}: {e}") from None
    if not isinstance(data, dict):
        raise NotPretrained(f"{str(path)!r} is not a JSON object")
    return data


def gpt2_arch_from_hf_config(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    """The GPT spec fields of a Hugging Face GPT-2 `config.json` (a config without `model_type` is GPT-2's)."""
    if cfg.get("model_type") not in (None, "gpt2"):
        hint = ' (model.kind = "llama" takes it)' if cfg.get("model_type") == "llama" else ""
        raise NotPretrained(f"{str(Path(name))!r} holds a {cfg.get('model_type')!r} model, not GPT-2{hint}")
    try:
        return dict(
            n_layer=cfg["n_layer"],
            n_head=cfg["n_head"],
            n_embd=cfg["n_embd"],
            block_size=cfg["n_positions"],
            vocab_size=cfg["vocab_size"],
            bias=True,
        )
    except KeyError as e:
        raise NotPretrained(f"{str(Path(name) / 'config.json')!r} lacks {e.args[0]!r}") from None


def llama_arch_from_hf_config(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    """The llama spec fields of a Hugging Face Llama `config.json` (transformers 4 or 5 layout).

    Variants this product would compute differently are refused, each problem naming its field:
    rope scaling of any kind (only plain RoPE is implemented), attention or MLP biases, a sliding
    window, an activation other than SiLU, a head size other than hidden_size / num_attention_heads.
    """
    where = repr(name)
    if cfg.get("model_type") != "llama":
        raise NotPretrained(f"{where} holds a {cfg.get('model_type')!r} model (config.json model_type), not 'llama'")
    try:
        n_embd, n_head = cfg["hidden_size"], cfg["num_attention_heads"]
        arch = dict(
            n_layer=cfg["num_hidden_layers"],
            n_head=n_head,
            n_kv_head=cfg.get("num_key_value_heads") or n_head,
            n_embd=n_embd,
            intermediate_size=cfg["intermediate_size"],
            block_size=cfg["max_position_embeddings"],
            vocab_size=cfg["vocab_size"],
            norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        )
    except KeyError as e:
        raise NotPretrained(f"{where}: config.json lacks {e.args[0]!r}") from None
    # transformers 5 keeps rope settings in `rope_parameters`; 4 had `rope_theta` and `rope_scaling`
    rope = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or {}
    arch["rope_theta"] = float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    problems = []
    for field, table in (("rope_parameters", rope), ("rope_scaling", scaling)):
        rope_type = table.get("rope_type", table.get("type", "default"))
        if rope_type != "default":
            problems.append(f"{field}.rope_type is {rope_type!r} (only plain RoPE, 'default', is implemented)")
    for field in ("attention_bias", "mlp_bias"):
        if cfg.get(field):
            problems.append(f"{field} is true (this model has no biases)")
    if cfg.get("sliding_window") is not None or cfg.get("use_sliding_window"):
        problems.append(f"sliding_window is {cfg.get('sliding_window')!r} (attention here sees the whole block)")
    if cfg.get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act is {cfg.get('hidden_act')!r} (the MLP is SwiGLU: 'silu')")
    head_dim = cfg.get("head_dim")
    if isinstance(n_head, int) and n_head > 0 and head_dim is not None and head_dim * n_head != n_embd:
        problems.append(f"head_dim is {head_dim} (must be hidden_size / num_attention_heads = {n_embd / n_head:g})")
    if problems:
        raise NotPretrained(f"{where} is a Llama variant this model does not compute: {'; '.join(problems)}")
    return arch


HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
"""A Hugging Face model id, `owner/name`."""


@attrs.frozen
class HFArch:
    """How the spec half reads one Hugging Face `model_type` (its importer, with torch, is weights.HF_IMPORTERS)."""

    from_config: Callable[[dict[str, Any], str], dict[str, Any]]
    """`from_config(config_json, name)`: the spec fields of a config.json; NotPretrained, naming the
    field, for a variant this product does not compute."""
    hub_names: Optional[dict[str, dict[str, Any]]]
    """The hub names whose architecture is known without the hub (GPT-2's, the only names a GPT
    takes); None: any hub id, its config.json read from the Hugging Face cache or the hub."""
    own_tokenizer: bool
    """Whether a model of this type reads the ids of its own tokenizer.json (a Llama's), not of
    GPT-2's BPE whatever files come with it (GPT-2's; its hub names bring none)."""


HF_ARCHS: dict[str, HFArch] = {
    "gpt2": HFArch(gpt2_arch_from_hf_config, GPT2_ARCHS, own_tokenizer=False),
    "llama": HFArch(llama_arch_from_hf_config, None, own_tokenizer=True),
}
"""The Hugging Face architectures, by config.json's `model_type`, that a model kind may take
(its spec class's HF_MODEL_TYPE)."""


class HubUnreachable(NotPretrained):
    """A hub id whose config.json is neither cached nor reachable: not known to be wrong, only unknown."""


def hub_out_of_reach() -> str | None:
    """Why the Hugging Face hub cannot be reached from here (at once, not after the client's retries), or None."""
    import os
    import socket
    import urllib.parse

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    host = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except (OSError, UnicodeError) as e:
        return f"{host} cannot be looked up: {e}"
    return None


def _hub_config(hub_id: str) -> Path:
    """config.json of a hub model: from the Hugging Face cache, else downloaded (that file alone)."""
    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
    except ImportError as e:  # pragma: no cover - transformers brings it
        raise NotPretrained(f"reading hub model {hub_id!r} needs huggingface_hub ({e})") from None
    cached = try_to_load_from_cache(hub_id, "config.json")
    if isinstance(cached, str):
        return Path(cached)
    why = hub_out_of_reach()
    if why is not None:
        raise HubUnreachable(
            f"{hub_id!r} is not in the Hugging Face cache and the hub is out of reach ({why}); its "
            "architecture is checked against the spec when the weights load"
        )
    try:
        return Path(hf_hub_download(hub_id, "config.json"))
    except Exception as e:  # noqa: BLE001 - offline, unknown id, gated: all mean "cannot read it"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise NotPretrained(
            f"{hub_id!r} is not in the Hugging Face cache and its config.json cannot be downloaded ({first}); "
            "offline, name a local directory that save_pretrained wrote"
        ) from None


def _arch_from_manifest(path: Path, model: type[ModelSpec]) -> dict[str, Any]:
    manifest = _read_json(path)
    table = (manifest.get("spec") or {}).get("model") or {}
    # the kind the run's spec recorded; a spec written before model kinds existed has none, and
    # was a GPT's (the only kind there was)
    kind = table.get("kind", "gpt")
    if kind != _kind_of(model):
        raise NotPretrained(f"{str(path.parent)!r} is a run of a {kind!r} model (its spec's model.kind)")
    arch = {k: table[k] for k in model.ARCH_FIELDS if k in table}
    vocab = (manifest.get("model") or {}).get("vocab_size") or (manifest.get("data") or {}).get(
        "vocab_size"
    )
    if vocab is not None:
        arch["vocab_size"] = vocab
    if not arch.keys() - {"vocab_size"}:
        raise NotPretrained(f"{str(path)!r} records no model")
    return arch


def _checkpoint_header(path: Path) -> Any:
    if path.is_dir():  # a sharded checkpoint: its state.pt is the header
        path = path / SHARDED_CHECKPOINT_FILES[0]
    try:
        return _read_pickle_header(path)
    except NotPretrained:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
        raise NotPretrained(f"{str(path)!r} is not a readable checkpoint ({e})") from None


def _arch_from_checkpoint(path: Path, model: type[ModelSpec]) -> dict[str, Any]:
    """`model_arch` (ours) or `model_args` (nanoGPT) from a torch.save file, without torch."""
    header = _checkpoint_header(path)
    args = header.get("model_arch") or header.get("model_args") if isinstance(header, dict) else None
    if not isinstance(args, dict):
        raise NotPretrained(f"{str(path)!r} holds no model_args (not a nanoGPT/nanogpt checkpoint)")
    arch = {k: args[k] for k in model.ARCH_FIELDS if k in args}
    if "kind" not in args:
        # nanoGPT's model_args, and this product's records from before model kinds, are GPTs';
        # nanoGPT's early checkpoints had biases and no flag
        args = {**args, "kind": "gpt"}
        arch.setdefault("bias", True)
    if args["kind"] != _kind_of(model):
        raise NotPretrained(f"{str(path)!r} is not a checkpoint of a {_kind_of(model)!r} model (its model_arch.kind is {args['kind']!r})")
    return arch


class _Placeholder:
    """Stands in for every tensor and storage: the header is read, the weights never are."""

    def __init__(self, *args: Any, **kwargs: Any):
        pass

    def __setstate__(self, state: Any) -> None:
        pass


class _HeaderUnpickler(pickle.Unpickler):
    _PLAIN = {("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._PLAIN:
            return super().find_class(module, name)
        if module.startswith("torch"):
            return _Placeholder
        raise NotPretrained(
            f"refuses to unpickle {module}.{name}: only weights and plain data may be in a checkpoint"
        )

    def persistent_load(self, pid: Any) -> Any:
        return None


def _read_pickle_header(path: Path) -> Any:
    with zipfile.ZipFile(path) as z:
        pkl = next((n for n in z.namelist() if n.endswith("/data.pkl")), None)
        if pkl is None:
            raise NotPretrained(f"{str(path)!r} is not a torch.save zip file")
        with z.open(pkl) as f:
            return _HeaderUnpickler(f).load()
