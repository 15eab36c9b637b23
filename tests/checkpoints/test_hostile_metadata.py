"""A hostile DCP `.metadata` pickle runs nothing: a generated family of attacks, each read as a verb
would read it, none of which may create its marker file.

The family: every module the unpickler admits (and the usual suspects) x dotted attribute chains to
callables (`os.system`, `builtins.eval`, `subprocess.Popen`, `torch.load`, `pickle.loads` of a nested
pickle), plain globals of the same callables, and REDUCE/BUILD on the admitted classes with hostile
arguments. `test_a_widened_allowlist_lets_the_family_through` shows the family would notice an
allowlist that admits by prefix, as one did before (a module's imports were reachable through it)."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import pytest

from nanogpt.checkpoints import sharded
from nanogpt.errors import InputError


def _unicode(s: str) -> bytes:
    raw = s.encode()
    return (b"\x8c" + bytes([len(raw)]) + raw) if len(raw) < 256 else (b"X" + struct.pack("<I", len(raw)) + raw)


def _global(module: str, name: str) -> bytes:
    return _unicode(module) + _unicode(name) + b"\x93"  # STACK_GLOBAL: protocol 4 resolves dotted names


def _call(module: str, name: str, argument: bytes) -> bytes:
    """A protocol-4 pickle calling module.name(argument) (REDUCE); `argument` is one pickled value."""
    return b"\x80\x04" + _global(module, name) + argument + b"\x85R."


def _list(*items: str) -> bytes:
    return b"](" + b"".join(_unicode(i) for i in items) + b"e"


def _arguments(callable_name: str, marker: Path) -> bytes:
    """The one argument that makes `callable_name` create `marker`."""
    shell = f"touch {marker}"
    last = callable_name.rsplit(".", 1)[-1]
    if last in ("system", "popen"):
        return _unicode(shell)
    if last in ("eval", "exec"):
        return _unicode(f"__import__('os').system({shell!r})")
    if last in ("Popen", "run", "call", "check_call"):
        return _list("sh", "-c", shell)
    if last == "loads":  # a pickle inside the pickle
        inner = _call("os", "system", _unicode(shell))
        return b"C" + bytes([len(inner)]) + inner
    if last == "load":  # torch.load of a file that is itself a hostile pickle (weights_only is off in old torch)
        return _unicode(str(write_payload(marker)))
    raise AssertionError(callable_name)


def write_payload(marker: Path) -> Path:
    """The file the torch.load attacks point at: a pickle whose loading creates `marker`."""
    payload = marker.with_suffix(".payload")
    payload.write_bytes(_call("os", "system", _unicode(f"touch {marker}")))
    return payload


CALLABLES = ("os.system", "os.popen", "builtins.eval", "builtins.exec", "subprocess.Popen", "subprocess.run",
             "torch.load", "pickle.loads")
MODULES = sorted({module for module, _ in sharded._MetadataUnpickler.ALLOWED} | {"torch", "os", "builtins", "posix"})
CHAINS = [f"{prefix}{target}" for target in CALLABLES for prefix in ("", "sys.modules.", "torch.", "__builtins__.")]


def attacks(marker: Path) -> list[tuple[str, bytes]]:
    """(what it is, the .metadata bytes) for every attack of the family."""
    family = []
    for module in MODULES:
        for chain in CHAINS:
            family.append((f"{module} / {chain}", _call(module, chain, _arguments(chain, marker))))
    for target in CALLABLES:  # the plain global, no chain
        module, name = target.rsplit(".", 1)
        family.append((f"global {target}", _call(module, name, _arguments(target, marker))))
    shell = _unicode(f"touch {marker}")
    for module, name in sorted(sharded._MetadataUnpickler.ALLOWED):
        # REDUCE on an admitted class with a hostile argument, and BUILD setting a hostile __reduce__ state
        family.append((f"REDUCE {module}.{name}", _call(module, name, shell)))
        build = (b"\x80\x04" + _global(module, name) + b")\x81}" + _unicode("__reduce__")
                 + _global("os", "system") + b"s" + b"b.")
        family.append((f"BUILD {module}.{name}", build))
    return family


def _read(directory: Path) -> None:
    sharded.read_metadata(directory)


def run_family(tmp_path: Path) -> list[str]:
    """The attacks whose marker was created (none, when the unpickler holds)."""
    succeeded = []
    for i, (what, data) in enumerate(attacks(tmp_path / "marker")):
        directory = tmp_path / f"ckpt-{i:05d}.dcp"
        directory.mkdir()
        (directory / ".metadata").write_bytes(data)
        marker = tmp_path / "marker"
        for path in (marker, marker.with_suffix(".payload")):
            path.unlink(missing_ok=True)
        write_payload(marker)  # the torch.load attacks' file, afresh (not the whole family again: 330 x 330)
        try:
            _read(directory)
        except InputError:
            pass
        except BaseException as e:  # noqa: BLE001 - anything but InputError is a traceback for the user
            succeeded.append(f"{what}: {type(e).__name__}: {e}")
        if marker.exists():
            succeeded.append(what)
    return succeeded


def test_the_attack_family_is_refused_and_runs_nothing(tmp_path: Path):
    family = attacks(tmp_path / "marker")
    assert len(family) >= len(MODULES) * len(CHAINS)
    assert run_family(tmp_path) == []


def test_a_widened_allowlist_lets_the_family_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The allowlist as it was (anything named in DCP's metadata module), and one widened by prefix:
    the family notices both, so it is not a test that cannot fail."""
    def by_prefix(self, module: str, name: str):
        if module.startswith("torch"):
            return pickle.Unpickler.find_class(self, module, name)
        raise pickle.UnpicklingError(f"{module}.{name}")

    monkeypatch.setattr(sharded._MetadataUnpickler, "find_class", by_prefix)
    assert any("os.system" in what for what in run_family(tmp_path))


def test_a_real_metadata_file_still_reads(tmp_path: Path):
    import torch
    import torch.distributed.checkpoint as dcp

    state = {"model": {"w": torch.zeros(3, 2), "b": torch.zeros(2, dtype=torch.bfloat16), "i": torch.zeros(2, dtype=torch.int64)}}
    with pytest.warns(UserWarning):
        dcp.save(state, storage_writer=dcp.FileSystemWriter(tmp_path), no_dist=True)
    assert set(sharded.read_metadata(tmp_path).state_dict_metadata) == {"model.w", "model.b", "model.i"}
