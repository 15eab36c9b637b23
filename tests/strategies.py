"""Hypothesis strategies for experiment specs, as raw TOML-ready dicts.

`st.builds` ignores attrs validators and knows nothing of cross-field rules, so every table is
composed by hand, mirroring nanogpt/config/tables.py: the bounds and patterns of each field, the
rules between fields, and the defaults of the fields a spec leaves out (warmup <= decay must hold
for the values in effect, stated or not). Each field is stated or left out at random, and a float
field with an integral value is spelled as an int or a float at random.

Besides valid specs: arbitrary TOML documents (`toml_documents`), arbitrary override words
(`override_words`), and valid specs with one field broken (`broken_specs`).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import typing
from pathlib import Path
from typing import Any, Literal

import attrs
from hypothesis import strategies as st

from nanogpt.registry import REGISTRIES
from nanogpt.config.checks import Bound, Each, Length, Pattern, validators_of
from nanogpt.config.pretrained import GPT2_ARCHS
from nanogpt.config.tables import EMBEDDED_CORPORA, GPT2_NAMES, MAX_PROCESS_BYTES, TABLES, Experiment

INT64_MAX = 2**63 - 1
# A file that exists wherever the tests run: what a valid `file:` source may name.
EXISTING_FILE = str(Path(__file__).resolve())
# Modules a valid spec may name as plugins: importing them does nothing new.
HARMLESS_PLUGINS = ("json", "math", "nanogpt.config.checks")

Spec = dict[str, Any]


# ------------------------------------------------------------------------------ field values


def ints(lo: int = 0, hi: int = INT64_MAX) -> st.SearchStrategy[int]:
    """Integers in [lo, hi], mostly small ones, TOML's 64-bit range at most."""
    small = st.integers(lo, min(hi, lo + 4096))
    return st.one_of(small, small, st.integers(lo, hi))


def numbers(
    lo: float | None = None, hi: float | None = None, *, exclude_lo: bool = False, exclude_hi: bool = False
) -> st.SearchStrategy[float]:
    """Finite floats within bounds, integral ones among them (so int spellings come up)."""
    floats = st.floats(lo, hi, exclude_min=exclude_lo, exclude_max=exclude_hi, allow_nan=False, allow_infinity=False)
    int_lo = -(2**53) if lo is None else math.floor(lo) + 1 if exclude_lo or lo != math.floor(lo) else int(lo)
    int_hi = 2**53 if hi is None else math.ceil(hi) - 1 if exclude_hi or hi != math.ceil(hi) else int(hi)
    if int_lo > int_hi:
        return floats
    return st.one_of(floats, st.integers(int_lo, int_hi).map(float))


_NAME_START = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_"


def safe_names() -> st.SearchStrategy[str]:
    """Names that make one directory level, as checks.SAFE_NAME has them (from_regex draws slower)."""
    return st.builds(str.__add__, st.sampled_from(_NAME_START), st.text(_NAME_START + ".+=-", max_size=127))


def one_line_text(min_size: int = 0) -> st.SearchStrategy[str]:
    """Text that `Pattern(".+")` accepts when non-empty: Python's `.` does not match a newline."""
    return st.text(st.characters(exclude_characters="\n", exclude_categories=("Cs",)), min_size=min_size, max_size=40)


@attrs.define
class _Table:
    """A raw table under construction: each field stated or left out to take its default."""

    draw: Any
    raw: dict[str, Any] = attrs.field(factory=dict)

    def field(self, name: str, default: Any, values: st.SearchStrategy, *, must_state: bool = False) -> Any:
        """State `name` (a value drawn from `values`) or leave it out; returns the value in effect."""
        if must_state or self.draw(st.booleans()):
            v = self.draw(values)
            self.raw[name] = self.draw(_spelled(v))
            return v
        return default

    def optional(self, name: str, values: st.SearchStrategy) -> Any:
        """A field whose default is None: stated or absent (TOML has no null)."""
        return self.field(name, None, values)


def _spelled(v: Any) -> st.SearchStrategy:
    """An integral float may be spelled as an int; TOML readers of the spec must not care."""
    if isinstance(v, float) and v.is_integer() and abs(v) <= 2**53:
        return st.sampled_from([v, int(v)])
    if isinstance(v, (list, tuple)):
        return st.tuples(*(_spelled(x) for x in v)).map(list)
    return st.just(v)


def _kind(t: _Table, kind: str, default_kind: str) -> None:
    if kind != default_kind or t.draw(st.booleans()):
        t.raw["kind"] = kind


# ------------------------------------------------------------------------------------ model


@st.composite
def gpt_models(draw) -> Spec:
    """A `[model]` table of kind "gpt", from scratch or from GPT-2's weights (stated arch agreeing)."""
    t = _Table(draw)
    _kind(t, "gpt", "gpt")
    init_from = t.field("init_from", "scratch", st.sampled_from(["scratch", *GPT2_NAMES]))
    if init_from in GPT2_ARCHS:
        arch = GPT2_ARCHS[init_from]
        for name in ("n_layer", "n_head", "n_embd", "vocab_size", "bias"):
            if draw(st.booleans()):
                t.raw[name] = arch[name]
        if draw(st.booleans()):
            t.raw["block_size"] = draw(st.integers(1, arch["block_size"]))
    else:
        n_head = t.field("n_head", 12, st.integers(1, 64))
        # n_embd divisible by n_head, whichever of them the spec states.
        c = t.field("n_embd", 768, st.integers(1, 256).map(lambda k: k * n_head), must_state=768 % n_head != 0)
        # The model with its optimizer state fits one machine (16 bytes a parameter, MAX_PROCESS_BYTES):
        # a third of that to the blocks (12C^2 + 13C parameters each), the positions and the vocabulary.
        third = MAX_PROCESS_BYTES // 16 // 3
        t.field("n_layer", 12, ints(1, max(1, third // (12 * c * c + 13 * c))))
        t.field("block_size", 1024, ints(1, third // c))
        t.optional("vocab_size", ints(1, third // c))
        t.field("bias", True, st.booleans())
    t.field("pad_vocab_multiple", 64, ints(1))
    t.field("dropout", 0.0, numbers(0.0, 1.0, exclude_hi=True))
    t.field("tie_weights", True, st.booleans())
    t.field("init", "gpt2", st.sampled_from(["gpt2", "pytorch"]))
    return t.raw


@st.composite
def llama_models(draw) -> Spec:
    """A `[model]` table of kind "llama", from scratch (a hub id would need the network)."""
    t = _Table(draw)
    _kind(t, "llama", "gpt")
    t.field("init_from", "scratch", st.just("scratch"))
    n_kv_head = t.optional("n_kv_head", st.integers(1, 16))
    # n_head a multiple of n_kv_head; n_embd a multiple of n_head with an even head size (RoPE)
    n_head = t.field("n_head", 12, st.integers(1, 8).map(lambda k: k * (n_kv_head or 1)),
                     must_state=n_kv_head is not None and 12 % n_kv_head != 0)
    t.field("n_embd", 768, st.integers(1, 64).map(lambda k: 2 * k * n_head), must_state=768 % (2 * n_head) != 0)
    t.field("n_layer", 12, ints(1, 64))
    t.optional("intermediate_size", ints(1, 1 << 16))
    t.field("block_size", 1024, ints(1, 1 << 16))
    t.optional("vocab_size", ints(1, 1 << 20))
    t.field("rope_theta", 10000.0, numbers(0.0, 1e9, exclude_lo=True))
    t.field("norm_eps", 1e-5, numbers(0.0, 1.0, exclude_lo=True))
    t.field("tie_embeddings", False, st.booleans())
    t.field("dropout", 0.0, numbers(0.0, 1.0, exclude_hi=True))
    return t.raw


# ------------------------------------------------------------------------------------- data


def sources() -> st.SearchStrategy[str]:
    """Every scheme `data.source` takes; a `file:` one names a file that exists."""
    host = st.text("abcdefghijklmnopqrstuvwxyz0123456789.-", min_size=1, max_size=20)
    return st.one_of(
        st.sampled_from([f"embedded:{c}" for c in EMBEDDED_CORPORA]),
        st.builds(lambda s, h, p: f"url:{s}://{h}/{p}", st.sampled_from(["http", "https"]), host, one_line_text()),
        st.builds(  # hf:DATASET_ID[@REVISION][:CONFIG], as the validator reads it
            lambda name, rev, config: f"hf:{name}{rev}{config}",
            st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="@:"), min_size=1, max_size=30),
            st.one_of(
                st.just(""),
                st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=":"), min_size=1, max_size=12).map("@{}".format),
            ),
            st.one_of(st.just(""), st.text(max_size=12).map(":{}".format)),
        ),
        st.just(f"file:{EXISTING_FILE}"),
    )


@st.composite
def tokens_data(draw) -> Spec:
    """A `[data]` table of kind "tokens"."""
    t = _Table(draw)
    _kind(t, "tokens", "tokens")
    t.field("dataset", "openwebtext", safe_names())
    t.field("data_dir", "data", one_line_text(min_size=1))
    source = t.optional("source", sources())
    if source is not None and source.startswith(("url:", "file:")):
        t.optional("source_sha256", st.binary(min_size=32, max_size=32).map(bytes.hex))
    t.field("text_column", "text", st.text(max_size=20))
    t.field("tokenizer", "gpt2", st.sampled_from(["gpt2", "char"]))
    t.field("val_fraction", 0.0005, numbers(0.0, 1.0, exclude_lo=True, exclude_hi=True))
    if source is not None and source.startswith("embedded:"):
        # the embedded corpus is one stream: only a contiguous split (stated: the default is random)
        t.field("split", "random", st.just("contiguous"), must_state=True)
    else:
        t.field("split", "random", st.sampled_from(["random", "contiguous"]))
    t.field("split_seed", 2357, ints(0))
    t.field("num_proc", 0, ints(0))
    t.field("val_tokens", 0, ints(0))
    t.field("align", "token", st.sampled_from(["token", "document"]))
    t.field("shard_tokens", 100_000_000, ints(1))
    return t.raw


# -------------------------------------------------------------------------------- optimizer


def _betas() -> st.SearchStrategy[list[float]]:
    return st.lists(numbers(0.0, 1.0, exclude_hi=True), min_size=2, max_size=2)


@st.composite
def adamw_optimizers(draw) -> tuple[Spec, float]:
    """An `[optimizer]` table of kind "adamw", and the lr in effect."""
    t = _Table(draw)
    _kind(t, "adamw", "adamw")
    lr = t.field("lr", 6e-4, numbers(0.0, exclude_lo=True))
    t.field("weight_decay", 0.1, numbers(0.0))
    t.field("betas", (0.9, 0.95), _betas())
    t.field("eps", 1e-8, numbers(0.0, exclude_lo=True))
    t.field("grad_clip", 1.0, numbers(0.0))
    t.optional("fused", st.booleans())
    return t.raw, lr


@st.composite
def sgd_optimizers(draw) -> tuple[Spec, float]:
    """An `[optimizer]` table of kind "sgd", and the lr in effect."""
    t = _Table(draw)
    _kind(t, "sgd", "adamw")
    lr = t.field("lr", 0.1, numbers(0.0, exclude_lo=True))
    momentum = t.field("momentum", 0.9, numbers(0.0, 1.0, exclude_hi=True))
    # Nesterov needs momentum.
    t.field("nesterov", False, st.booleans() if momentum > 0 else st.just(False))
    t.field("weight_decay", 0.0, numbers(0.0))
    t.field("grad_clip", 1.0, numbers(0.0))
    return t.raw, lr


@st.composite
def muon_optimizers(draw) -> tuple[Spec, float]:
    """An `[optimizer]` table of kind "muon", and the lr in effect (Muon's: the schedule's peak)."""
    t = _Table(draw)
    _kind(t, "muon", "adamw")
    lr = t.field("lr", 0.02, numbers(0.0, exclude_lo=True))
    momentum = t.field("momentum", 0.95, numbers(0.0, 1.0, exclude_hi=True))
    t.field("nesterov", True, st.booleans() if momentum > 0 else st.just(False), must_state=momentum == 0)
    t.field("ns_steps", 5, st.integers(1, 99))
    t.field("weight_decay", 0.0, numbers(0.0))
    t.field("adjust_lr_fn", "original", st.sampled_from(["original", "match_rms_adamw"]))
    t.field("adam_lr", 6e-4, numbers(0.0, exclude_lo=True))
    t.field("adam_betas", (0.9, 0.95), _betas())
    t.field("adam_eps", 1e-8, numbers(0.0, exclude_lo=True))
    t.field("adam_weight_decay", 0.0, numbers(0.0))
    t.optional("embed_lr", numbers(0.0, exclude_lo=True))
    t.optional("head_lr", numbers(0.0, exclude_lo=True))
    t.field("grad_clip", 1.0, numbers(0.0))
    return t.raw, lr


# --------------------------------------------------------------------------------- schedule


def _min_lr(t: _Table, default: float, lr: float) -> None:
    # schedule.min_lr must not exceed optimizer.lr.
    t.field("min_lr", default, numbers(0.0, lr), must_state=default > lr)


def _warmup_then_decay(t: _Table, lr: float, min_lr_default: float) -> None:
    warmup = t.field("warmup_iters", 2000, ints(0))
    t.field("decay_iters", 600000, ints(max(1, warmup)), must_state=warmup > 600000)
    _min_lr(t, min_lr_default, lr)


@st.composite
def cosine_schedules(draw, lr: float = 6e-4) -> Spec:
    """A `[schedule]` table of kind "cosine" fit for an optimizer whose lr is `lr`."""
    t = _Table(draw)
    _kind(t, "cosine", "cosine")
    _warmup_then_decay(t, lr, 6e-5)
    return t.raw


@st.composite
def linear_schedules(draw, lr: float = 6e-4) -> Spec:
    """A `[schedule]` table of kind "linear" fit for an optimizer whose lr is `lr`."""
    t = _Table(draw)
    _kind(t, "linear", "cosine")
    _warmup_then_decay(t, lr, 6e-5)
    return t.raw


@st.composite
def constant_schedules(draw, lr: float = 6e-4) -> Spec:
    """A `[schedule]` table of kind "constant"."""
    t = _Table(draw)
    _kind(t, "constant", "cosine")
    t.field("warmup_iters", 0, ints(0))
    return t.raw


@st.composite
def wsd_schedules(draw, lr: float = 6e-4) -> Spec:
    """A `[schedule]` table of kind "wsd" whose warmup ends before its cooldown starts."""
    t = _Table(draw)
    _kind(t, "wsd", "cosine")
    decay = t.field("decay_iters", 600000, ints(1))
    fraction = t.field("cooldown_fraction", 0.2, numbers(0.0, 1.0, exclude_lo=True))
    stable_end = decay - min(decay, round(decay * fraction))  # as WSDSpec.cooldown_iters rounds
    t.field("warmup_iters", 2000, st.integers(0, stable_end), must_state=2000 > stable_end)
    t.field("cooldown", "linear", st.sampled_from(["linear", "sqrt", "cosine"]))
    _min_lr(t, 0.0, lr)
    return t.raw


# ----------------------------------------------------------------------- the fixed tables


@st.composite
def trains(draw, block_size: int = 1024) -> Spec:
    """A `[train]` table; max_iters is 0 only for an eval-only run; a micro-batch's token ids (16 bytes
    a token) fit one machine."""
    t = _Table(draw)
    t.field("batch_size", 12, ints(1, MAX_PROCESS_BYTES // 16 // block_size))
    t.field("grad_accum", 40, ints(1))
    eval_only = t.field("eval_only", False, st.booleans())
    t.field("max_iters", 600000, ints(0 if eval_only else 1))
    t.field("eval_interval", 1000, ints(1))
    t.field("eval_iters", 200, ints(1))
    t.field("log_interval", 10, ints(1))
    t.field("keep_checkpoints", 2, ints(1))
    t.field("auto_resume", False, st.booleans())
    return t.raw


@st.composite
def systems(draw) -> Spec:
    """A `[system]` table."""
    t = _Table(draw)
    cuda_n = st.integers(0, 2**70).map(lambda n: f"cuda:{n}")
    t.field("device", "auto", st.one_of(st.sampled_from(["auto", "cpu", "mps", "cuda"]), cuda_n))
    t.field("dtype", "auto", st.sampled_from(["auto", "float32", "bfloat16", "float16"]))
    t.field("compile", True, st.booleans())
    t.field("deterministic", False, st.booleans())
    t.field("tf32", True, st.booleans())
    t.field("backend", "auto", st.sampled_from(["auto", "nccl", "gloo"]))
    t.optional("peak_tflops", numbers(0.0, exclude_lo=True))
    return t.raw


@st.composite
def loggings(draw) -> Spec:
    """A `[logging]` table."""
    t = _Table(draw)
    t.field("out_dir", "runs", one_line_text(min_size=1))
    t.optional("run_id", safe_names())
    t.field("tensorboard", True, st.booleans())
    t.field("trackers", ["tensorboard"], st.lists(st.sampled_from(["tensorboard", "wandb", "mlflow"]), unique=True))
    t.field("wandb_mode", "offline", st.sampled_from(["offline", "online", "disabled"]))
    t.optional("wandb_project", one_line_text(min_size=1))
    t.optional("wandb_entity", one_line_text(min_size=1))
    t.optional("mlflow_uri", one_line_text(min_size=1))
    t.optional("mlflow_experiment", one_line_text(min_size=1))
    t.field("samples", 1, ints(0))
    t.field("sample_tokens", 200, ints(1))
    return t.raw


@st.composite
def evaluations(draw) -> Spec:
    """An `[evaluation]` table."""
    t = _Table(draw)
    t.field("tasks", [], st.lists(st.sampled_from(["hellaswag", "arc_easy", "piqa", "winogrande"]), unique=True))
    t.field("interval", 0, ints(0))
    t.field("limit", 500, ints(1))
    t.field("data_dir", "", one_line_text())
    return t.raw


# ------------------------------------------------------------------------------ whole specs

MODEL_KINDS = {"gpt": gpt_models, "llama": llama_models}
DATA_KINDS = {"tokens": tokens_data}
OPTIMIZER_KINDS = {"adamw": adamw_optimizers, "sgd": sgd_optimizers, "muon": muon_optimizers}
SCHEDULE_KINDS = {
    "cosine": cosine_schedules,
    "linear": linear_schedules,
    "constant": constant_schedules,
    "wsd": wsd_schedules,
}
KIND_STRATEGIES = {"model": MODEL_KINDS, "data": DATA_KINDS, "optimizer": OPTIMIZER_KINDS, "schedule": SCHEDULE_KINDS}
"""table -> kind -> strategy: a test checks that every registered kind has one."""


@st.composite
def specs(draw) -> Spec:
    """A complete, valid spec as a raw dict: every table present or left out, every kind possible."""
    raw: Spec = {"name": draw(safe_names())}
    t = _Table(draw, raw)
    t.field("description", "", st.text(max_size=60))
    t.field("seed", 1337, ints(0))
    t.field("plugins", (), st.lists(st.sampled_from(HARMLESS_PLUGINS), max_size=2))
    optimizer, lr = draw(st.one_of(*(s() for s in OPTIMIZER_KINDS.values())))
    model = draw(st.one_of(*(s() for s in MODEL_KINDS.values())))
    tables = {
        "model": model,
        "data": draw(st.one_of(*(s() for s in DATA_KINDS.values()))),
        "optimizer": optimizer,
        "schedule": draw(st.one_of(*(s(lr) for s in SCHEDULE_KINDS.values()))),
        "train": draw(trains(model.get("block_size", 1024))),
        "system": draw(systems()),
        "logging": draw(loggings()),
        "evaluation": draw(evaluations()),
    }
    for name in TABLES:
        # An empty table and a table left out mean the same: every default (and the defaults
        # were only left out where they suit the rest).
        if tables[name] or draw(st.booleans()):
            raw[name] = tables[name]
    return raw


# --------------------------------------------------------------------- arbitrary documents

KNOWN_KEYS = sorted(
    {"extends", *TABLES}
    | {a.name for a in attrs.fields(Experiment)}
    | {a.name for r in REGISTRIES.values() for k in r.kinds() for a in attrs.fields(r.spec_class(k))}
)
# Keys whose values name files or modules: an arbitrary value there could read /dev/zero, walk
# the whole disk (`file:/**`) or import `antigravity`. Their values are defused below.
_PATH_KEYS = {"extends", "init_from", "source", "data_dir", "out_dir"}
_UNSAFE_IN_PATHS = re.compile(r"[/\\*?\[]")
_UNSAFE_IN_OVERRIDES = re.compile(r"[/\\*?]|plugins")

toml_scalars = st.one_of(
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(["scratch", "gpt2", "adamw", "sgd", "wsd", "cosine", "embedded:shakespeare", "hf:x"]),
    st.datetimes(),
    st.datetimes(timezones=st.integers(-23 * 60, 23 * 60).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))),
    st.dates(),
    st.times(),
)
toml_keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=10))
toml_values = st.recursive(
    toml_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(toml_keys, children, max_size=4),
    max_leaves=12,
)


def defuse(value: Any, key: str = "") -> Any:
    """A document with nothing that names a module and no path that leaves the current folder."""
    if isinstance(value, dict):
        return {k: defuse(v, k) for k, v in value.items() if k != "plugins"}
    if isinstance(value, list):
        return [defuse(v, key) for v in value]
    if key in _PATH_KEYS and isinstance(value, str):
        return _UNSAFE_IN_PATHS.sub("", value).lstrip(".") or "absent"
    return value


def toml_documents() -> st.SearchStrategy[dict[str, Any]]:
    """Arbitrary TOML-ready documents: known and random keys, every TOML type, valid specs mangled."""
    random_docs = st.dictionaries(toml_keys, toml_values, max_size=8)
    return st.one_of(random_docs, mangled_specs()).map(defuse)


@st.composite
def mangled_specs(draw) -> Spec:
    """A valid spec with a few values replaced by arbitrary ones: deep into the checks, then astray."""
    raw = draw(specs())
    for _ in range(draw(st.integers(1, 3))):
        table = raw
        path = draw(st.lists(toml_keys, min_size=1, max_size=2))
        for key in path[:-1]:
            nxt = table.get(key)
            table = nxt if isinstance(nxt, dict) else table
        table[path[-1]] = draw(toml_values)
    return raw


def toml_inline(value: Any) -> str:
    """One value as inline TOML: arrays and tables on one line."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_inline(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_inline(v) for v in value) + "]"
    import tomli_w

    return tomli_w.dumps({"v": value})[len("v = ") : -1]


def toml_key(key: str) -> str:
    import tomli_w

    return tomli_w.dumps({key: 0})[: -len(" = 0\n")]


_override_paths = st.lists(toml_keys, min_size=1, max_size=3).map(".".join)


def override_words() -> st.SearchStrategy[str]:
    """`key=value` words as a user might type them, mistyped, or as pure noise."""
    values = st.one_of(st.text(max_size=20), toml_values.map(toml_inline))
    words = st.one_of(
        st.text(max_size=30),
        st.builds(lambda p, v: f"{p}={v}", _override_paths, values),
        st.builds(lambda p, v: f"{p} = {v}", _override_paths, values),
    )
    # No module names and no paths out of the current folder, as in `defuse`.
    return words.filter(lambda w: not _UNSAFE_IN_OVERRIDES.search(w))


# ------------------------------------------------------------------------- one field broken


def _class_of(table: str, raw: Spec) -> type:
    if table == "":
        return Experiment
    registry = next((r for r in REGISTRIES.values() if r.table == table), None)
    if registry is None:
        return attrs.fields_dict(attrs.resolve_types(Experiment))[table].type
    return registry.spec_class(raw.get(table, {}).get("kind", registry.default_kind))


def _optional_inner(tp: Any) -> Any:
    args = typing.get_args(tp)
    if type(None) in args:
        (tp,) = [a for a in args if a is not type(None)]
    return tp


def wrong_types(tp: Any) -> list[Any]:
    """Values TOML can hold that a field of type `tp` refuses on type alone."""
    tp = _optional_inner(tp)
    if tp is bool:
        return [1, "true", 1.0]
    if tp is int:
        return ["12", 1.5, True, [1]]
    if tp is float:
        return ["0.1", True, [0.1], {"a": 1}]
    if tp is str:
        return [5, False, ["a"], 1.5]
    if typing.get_origin(tp) is Literal:
        return [5, "no-such-choice", True]
    if typing.get_origin(tp) is tuple:
        return ["x", 3, {"a": 1}]
    return [5, "x", [1]]  # a table


def out_of_range(attribute: attrs.Attribute) -> list[Any]:
    """Values of the right type that the field's validators refuse."""
    return _refused(_optional_inner(attribute.type), validators_of(attribute), attribute.name)


def _refused(tp: Any, validators: tuple[Any, ...], name: str) -> list[Any]:
    bad: list[Any] = []
    for v in validators:
        if isinstance(v, Bound):
            step = 1 if tp is int else 0.5
            limit = int(v.limit) if tp is int else float(v.limit)
            bad.append({">=": limit - step, ">": limit, "<=": limit + step, "<": limit}[v.op])
        elif isinstance(v, Pattern):
            bad += [s for s in ("", "a/b", "..", "a b", "-x") if not re.fullmatch(v.regex, s)][:1]
        elif isinstance(v, Length):
            bad.append([0.5] * (v.n + 1))
        elif isinstance(v, Each):
            # One bad item in an array of the right length, so that Each (not Length) refuses it.
            n = next((w.n for w in validators if isinstance(w, Length)), 1)
            bad += [[item] * n for item in _refused(typing.get_args(tp)[0], v.validators, name)]
        elif name == "source":
            bad += ["nope:x", "embedded:", "url:ftp://x"]
    return bad


@st.composite
def broken_specs(draw) -> tuple[Spec, str]:
    """A valid spec with one thing wrong, and the dotted path an error must name."""
    raw = draw(specs())
    table = draw(st.sampled_from(["", *TABLES]))
    cls = _class_of(table, raw)
    if table and table not in raw:
        raw[table] = {}
    where = raw[table] if table else raw
    prefix = f"{table}." if table else ""
    fields = [a for a in attrs.fields(attrs.resolve_types(cls)) if not (table == "" and a.name in TABLES)]
    how = draw(st.sampled_from(["type", "range", "unknown key", "unknown kind", "not a table", "missing name"]))
    if how == "missing name" or (how == "not a table" and not table):
        del raw["name"]
        return raw, "name"
    if how == "not a table":
        raw[table] = draw(st.sampled_from([5, "x", [1, 2], True]))
        return raw, table
    if how == "unknown kind" and table in KIND_STRATEGIES:
        where["kind"] = draw(st.sampled_from(["nope", "adam", "GPT", 5, ["gpt"]]))
        return raw, f"{table}.kind"
    if how == "unknown key" or how == "unknown kind":
        known = {a.name for a in fields} | set(TABLES)
        key = draw(st.one_of(st.sampled_from([a.name + "s" for a in fields]), safe_names()).filter(lambda k: k not in known))
        where[key] = draw(toml_scalars)
        return raw, prefix + key
    if how == "range":
        ranged = [a for a in fields if out_of_range(a)]
        a = draw(st.sampled_from(ranged)) if ranged else None
        if a is not None:
            where[a.name] = draw(st.sampled_from(out_of_range(a)))
            return raw, prefix + a.name
    candidates = [a for a in fields if a.name != "kind"]
    a = draw(st.sampled_from(candidates))
    where[a.name] = draw(st.sampled_from(wrong_types(a.type)))
    return raw, prefix + a.name
