"""Files written so that a crash leaves the previous good file or nothing: tmp -> fsync -> rename."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
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


def inside(directory: str | os.PathLike[str], relative: object) -> Path | None:
    """`directory / relative` if that path (links resolved) lies within `directory`, else None.

    For paths read from files a user can edit (a manifest's checkpoint entries, meta.json's file
    names): an absolute path, a `..` that climbs out, or a link pointing elsewhere is never followed.
    """
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        return None
    base = Path(directory).resolve()
    candidate = (base / relative).resolve()
    return candidate if candidate != base and candidate.is_relative_to(base) else None


class NotRegularFile(OSError):
    """A path that exists but is a FIFO, a device, a socket or a directory: never read it."""


def read_regular_bytes(path: str | os.PathLike[str], max_bytes: int | None = None) -> bytes:
    """The bytes of a regular file, without ever blocking on a FIFO or reading a device.

    NotRegularFile for anything else; OSError (EFBIG) when the file is bigger than `max_bytes`.
    """
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(f"{os.fspath(path)!r} is not a regular file")
        if max_bytes is not None and st.st_size > max_bytes:
            raise OSError(27, f"{os.fspath(path)!r} is {st.st_size:,} bytes, more than the {max_bytes:,} allowed")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read() if max_bytes is None else f.read(max_bytes + 1)
    finally:
        os.close(fd)
