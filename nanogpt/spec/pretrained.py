"""The architecture of the weights `model.init_from` names, read without torch.

Fields a spec leaves out come from here; fields it states must agree (PRODUCT.md). Reading is
metadata only: GPT-2's published sizes, a Hugging Face `config.json`, a run's `manifest.json`, or
the pickle header of a checkpoint file read by an unpickler that builds nothing but plain data.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any, Literal

import attrs

from nanogpt.spec.tables import GPT2_NAMES

ARCH_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "bias")
"""Fields of a GPT spec that are properties of the weights, not of the training."""

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


def locate_weights(name: str) -> WeightsName:
    """The one place that decides what a weights name points to.

    What is on disk comes first (as in transformers: a local folder named gpt2 is that folder),
    then GPT-2's names. NotPretrained when it names nothing that holds weights.
    """
    path = Path(name)
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except (OSError, ValueError):  # a name too long for the file system is no file either
        is_dir = is_file = False
    if is_dir:
        if (path / "config.json").is_file():
            return WeightsName("hf_dir", name)
        if any((path / marker).exists() for marker in RUN_MARKERS):
            return WeightsName("run", name)
        raise NotPretrained(
            f"directory {name!r} holds neither a Hugging Face model (config.json) "
            "nor a run (manifest.json)"
        )
    if is_file:
        return WeightsName("checkpoint", name)
    if name in GPT2_NAMES:
        return WeightsName("hub", name)
    known = ", ".join(repr(n) for n in ("scratch", *GPT2_NAMES))
    raise NotPretrained(f"no such file or directory {name!r} (or one of {known})")


def arch_of(init_from: str) -> dict[str, Any]:
    """The architecture fields of the weights `init_from` names (a subset of ARCH_FIELDS)."""
    weights = locate_weights(init_from)
    path = weights.path
    if weights.kind == "hub":
        return dict(GPT2_ARCHS[init_from])
    if weights.kind == "hf_dir":
        return _arch_from_hf_config(path / "config.json")
    if weights.kind == "run":
        return _arch_from_manifest(path / "manifest.json")
    run_dir = path.parent.parent
    if path.parent.name == "checkpoints" and (run_dir / "manifest.json").is_file():
        return _arch_from_manifest(run_dir / "manifest.json")
    return _arch_from_checkpoint(path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NotPretrained(f"cannot read {str(path)!r}: {e}") from None
    if not isinstance(data, dict):
        raise NotPretrained(f"{str(path)!r} is not a JSON object")
    return data


def _arch_from_hf_config(path: Path) -> dict[str, Any]:
    cfg = _read_json(path)
    if cfg.get("model_type") not in (None, "gpt2"):
        raise NotPretrained(
            f"{str(path.parent)!r} holds a {cfg.get('model_type')!r} model, not GPT-2"
        )
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
        raise NotPretrained(f"{str(path)!r} lacks {e.args[0]!r}") from None


def _arch_from_manifest(path: Path) -> dict[str, Any]:
    manifest = _read_json(path)
    model = (manifest.get("spec") or {}).get("model") or {}
    arch = {k: model[k] for k in ARCH_FIELDS if k in model}
    vocab = (manifest.get("model") or {}).get("vocab_size") or (manifest.get("data") or {}).get(
        "vocab_size"
    )
    if vocab is not None:
        arch["vocab_size"] = vocab
    if "n_layer" not in arch:
        raise NotPretrained(f"{str(path)!r} records no model")
    return arch


def _arch_from_checkpoint(path: Path) -> dict[str, Any]:
    """`model_args` (nanoGPT) or `model_arch` (ours) from a torch.save file, without torch."""
    try:
        header = _read_pickle_header(path)
    except NotPretrained:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
        raise NotPretrained(f"{str(path)!r} is not a readable checkpoint ({e})") from None
    args = header.get("model_arch") or header.get("model_args") if isinstance(header, dict) else None
    if not isinstance(args, dict):
        raise NotPretrained(f"{str(path)!r} holds no model_args (not a nanoGPT/nanogpt checkpoint)")
    arch = {k: args[k] for k in ARCH_FIELDS if k in args}
    arch.setdefault("bias", True)  # nanoGPT's early checkpoints had biases and no flag
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
