"""Files written so that a crash leaves the previous good file or nothing: tmp -> fsync -> rename."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Write to a temporary file beside `path`; it replaces `path` only if the block completes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide shared datasets from colleagues
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def make_dirs(path: str | os.PathLike[str], what: str) -> None:
    """`mkdir -p path`, or an InputError naming `what` and why not (a file in the way, no permission)."""
    from nanogpt.errors import InputError

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        why = f"{str(blocker)!r} is a file, not a directory" if blocker is not None else (e.strerror or str(e))
        raise InputError(f"{what}: cannot create the directory {str(path)!r}: {why}") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make renames in `directory` durable (a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_HASH_PROGRESS_BYTES = 256 << 20  # show a bar when hashing a file bigger than this


def sha256_file(path: str | os.PathLike[str], *, progress: bool = False) -> str:
    """Hex sha256 of a file's bytes (with a progress bar for big files when asked)."""
    h = hashlib.sha256()
    size = os.path.getsize(path)
    with open(path, "rb") as f, progress_bar(
        progress and size > _HASH_PROGRESS_BYTES, total=size, unit="B", unit_scale=True, desc=f"hashing {Path(path).name}"
    ) as bar:
        while block := f.read(1 << 22):
            h.update(block)
            bar.update(len(block))
    return h.hexdigest()


def progress_bar(enabled: bool, **kwargs):
    """A tqdm bar on stderr, or a silent stand-in when `enabled` is false."""
    from tqdm import tqdm

    return tqdm(disable=not enabled, dynamic_ncols=True, **kwargs)


def want_progress(progress: bool | None) -> bool:
    """`progress` as given, or (None) whether stderr is a terminal."""
    if progress is not None:
        return progress
    try:
        return os.isatty(2)
    except OSError:  # pragma: no cover
        return False


def read_user_text(path: str | os.PathLike[str], what: str) -> str:
    """A UTF-8 text file a user named; InputError saying what is wrong, with `what` first."""
    from nanogpt.errors import InputError

    try:
        return Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise InputError(f"{what}: no such file {str(path)!r} (it does not exist)") from None
    except IsADirectoryError:
        raise InputError(f"{what}: {str(path)!r} is a directory, not a text file") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{what}: {str(path)!r} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise InputError(f"{what}: cannot read {str(path)!r}: {e.strerror or e}") from None
