"""Specs as a hostile user writes them: deep nesting, endless or blocking files, long extends chains,
filesystem-wide globs, and very many keys. Each is a SpecError that says what limit it broke."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nanogpt.config.problems import SpecError
from nanogpt.config.load import load_spec
from nanogpt.config import load as spec_load
from nanogpt.config.dotted import flatten
from nanogpt.config.load import COMPONENT_DEFAULT_KINDS
from tests.conftest import REPO


def report(path: Path | str, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(SpecError) as e:
        load_spec(path, overrides)
    return e.value.report()


def spec(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text('name = "h"\n' + text, encoding="utf-8")
    return path


# -------------------------------------------------------------------------------- nesting


def test_nesting_beyond_the_parsers_recursion_is_a_spec_error(tmp_path):
    """5,000 nested arrays or 3,000 nested inline tables: a SpecError, not a RecursionError traceback."""
    arrays = spec(tmp_path, "x = " + "[" * 5000 + "]" * 5000 + "\n", "arrays.toml")
    tables = spec(tmp_path, "x = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n", "tables.toml")
    for path in (arrays, tables):
        assert report(path) == f"{path}: nests arrays or tables too deeply (a spec nests at most 32 levels)"


def test_nesting_beyond_the_limit_names_where(tmp_path):
    """Nesting the parser manages but no spec needs (40 arrays, a 100-part dotted key) is refused at its path."""
    arrays = spec(tmp_path, "x = " + "[" * 40 + "]" * 40 + "\n", "arrays.toml")
    assert report(arrays) == f"{arrays}: 1 problem\n  x{'[0]' * 31}: nests more than 32 levels of arrays or tables"
    dotted = spec(tmp_path, ".".join(["a"] * 100) + " = 1\n", "dotted.toml")
    assert report(dotted) == f"{dotted}: 1 problem\n  {'.'.join(['a'] * 32)}: nests more than 32 levels of arrays or tables"


def test_deep_override_values_are_refused(tmp_path):
    """An override's value is parsed as TOML too: deep nesting there is a SpecError naming the key."""
    path = spec(tmp_path, "")
    for depth in (40, 5000):
        assert report(path, ("train.x=" + "[" * depth + "]" * depth,)) == (
            f"{path}: 1 problem\n  train.x: override train.x=...: its value nests more than 32 levels of arrays or tables"
        )


# -------------------------------------------------------------------------------- extends


def test_a_chain_of_1500_extends_is_refused(tmp_path):
    """A chain of extends far longer than any real one stops at the limit with a message, not a RecursionError."""
    for i in range(1500):
        (tmp_path / f"{i}.toml").write_text(f'extends = "{i + 1}.toml"\n' if i < 1499 else 'name = "c"\n')
    assert report(tmp_path / "0.toml") == (
        f"{tmp_path / '0.toml'}: 1 problem\n  extends: {tmp_path / '33.toml'}: the chain of extends is more than 32 files long"
    )


def test_a_diamond_of_extends_cannot_multiply_the_files_read(tmp_path):
    """Each file extending the next one twice would read 2**20 files: the count of files read is limited."""
    for i in range(20):
        (tmp_path / f"{i}.toml").write_text(f'extends = ["{i + 1}.toml", "{i + 1}.toml"]\n')
    (tmp_path / "20.toml").write_text('name = "d"\n')
    text = report(tmp_path / "0.toml")
    assert "extends: " in text and "more than 256 files read through extends" in text


@pytest.mark.parametrize(("target", "kind"), [("/dev/zero", "a character device"), ("/dev/null", "a character device"), (".", "a directory")])
def test_extends_names_only_regular_files(tmp_path, target, kind):
    """`extends = "/dev/zero"` grew to all of memory: anything but a regular file is refused unread."""
    if not os.path.exists(target):
        pytest.skip(f"no {target} here")
    path = spec(tmp_path, f'extends = "{target}"\n')
    shown = os.path.normpath(os.path.join(str(tmp_path), target))
    assert report(path) == f"{path}: 1 problem\n  extends: {shown}: cannot be read: it is {kind}, not a regular file"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_extends_of_a_fifo_does_not_hang(tmp_path):
    """Opening a FIFO waits for a writer that never comes: `check` refuses it at once instead (a real process,
    so that the old behaviour fails by its timeout rather than hanging the suite)."""
    os.mkfifo(tmp_path / "pipe.toml")
    path = spec(tmp_path, 'extends = "pipe.toml"\n')
    done = subprocess.run([sys.executable, "-m", "nanogpt", "check", str(path)], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 2
    assert done.stderr == f"{path}: 1 problem\n  extends: {tmp_path / 'pipe.toml'}: cannot be read: it is a FIFO (named pipe), not a regular file\n"


def test_a_spec_file_larger_than_a_mebibyte_is_refused(tmp_path):
    """A spec is read only up to its limit; a bigger file (the top one or one it extends) is refused."""
    big = tmp_path / "big.toml"
    big.write_text('name = "b"\n' + "# padding\n" * 120_000)
    assert report(big) == f"{big}: cannot be read: it is larger than 1,048,576 bytes, the most a spec may be"


# ------------------------------------------------------------------------------------ globs


@pytest.mark.parametrize("pattern", ["/**/x.txt", "/*/x.txt", "/../**/x.txt", "//**"])
def test_a_glob_from_the_filesystem_root_is_refused(tmp_path, pattern):
    """`data.source = "file:/**/x.txt"` walked the whole file system at `check`: it is refused before any walk."""
    path = spec(tmp_path, f'[data]\nsource = "file:{pattern}"\n')
    text = report(path)
    assert text.startswith(f"{path}: 1 problem\n  data.source: is a glob that starts at the filesystem root")
    assert f"(got 'file:{pattern}')" in text


def test_globs_rooted_in_a_directory_are_still_fine(tmp_path, monkeypatch):
    """A glob that starts in a directory the user names (or the working directory) is searched as before."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "texts" / "a").mkdir(parents=True)
    (tmp_path / "texts" / "a" / "x.txt").write_text("hello")
    for source in ("file:texts/**/*.txt", f"file:{tmp_path}/texts/**/*.txt", "file:**/x.txt"):
        exp, _ = load_spec(spec(tmp_path, f'[data]\nsource = "{source}"\n'))
        assert exp.data.source == source


# ------------------------------------------------------------------------------- many keys


def test_20000_top_level_keys_are_each_reported(tmp_path):
    """A spec of 20,000 unknown keys reports every one (without a guess for each: no typo makes that many)."""
    path = tmp_path / "keys.toml"
    path.write_text('name = "k"\n' + "".join(f"k{i} = {i}\n" for i in range(20_000)))
    lines = report(path).splitlines()
    assert lines[0] == f"{path}: 20000 problems" and lines[1:3] == ["  k0: unknown key", "  k1: unknown key"]
    assert len(lines) == 20_001


def test_a_few_unknown_keys_still_get_a_guess(tmp_path):
    """Below the limit, each unknown key keeps its "did you mean"."""
    assert report(spec(tmp_path, "seeed = 1\n")).endswith("seeed: unknown key (did you mean 'seed'?)")


class CountingDict(dict):
    """A dict that counts the entries read by walking it (iteration, items())."""

    walked = 0

    def __iter__(self):
        for key in super().__iter__():
            CountingDict.walked += 1
            yield key

    def items(self):
        for item in super().items():
            CountingDict.walked += 1
            yield item


def test_merging_is_linear_in_the_keys():
    """Merging n keys walks the provenance a number of times linear in n (it rescanned every path seen
    so far for each key: 20,000 keys took 76 s)."""
    n = 2000
    over = {f"k{i}": i for i in range(n)}
    into, provenance = {}, CountingDict()
    CountingDict.walked = 0
    spec_load._merge(into, provenance, over, CountingDict({k: "s.toml" for k in over}))
    assert into == over and dict(provenance) == {k: "s.toml" for k in over}
    assert CountingDict.walked <= 4 * n


def forget(provenance: dict[str, str], path: str) -> None:
    for p in [p for p in provenance if p == path or p.startswith(path + ".")]:
        del provenance[p]


def reference_merge(into: dict, provenance: dict, over: dict, over_prov: dict, prefix: str = "") -> None:
    """The merge as it was (quadratic, but plainly right): the oracle for the linear one."""
    for key, value in over.items():
        path = f"{prefix}{key}"
        old = into.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            if not prefix and key in COMPONENT_DEFAULT_KINDS and "kind" in value:
                if value["kind"] != old.get("kind", COMPONENT_DEFAULT_KINDS[key]):
                    into[key] = {}
                    forget(provenance, path)
            reference_merge(into[key], provenance, value, over_prov, path + ".")
        else:
            forget(provenance, path)
            into[key] = copy.deepcopy(value)
            provenance.update({p: s for p, s in over_prov.items() if p == path or p.startswith(path + ".")})


keys = st.sampled_from(["model", "optimizer", "kind", "a", "b", "c"])
leaves = st.one_of(st.integers(0, 3), st.sampled_from(["gpt", "mlp", "adamw", "sgd"]), st.lists(st.integers(0, 2), max_size=2))
documents = st.recursive(leaves, lambda inner: st.dictionaries(keys, inner, max_size=4), max_leaves=12).filter(
    lambda d: isinstance(d, dict)
)


@given(layers=st.lists(documents, min_size=1, max_size=4))
def test_linear_merge_agrees_with_the_reference(layers: list[dict[str, Any]]):
    """Merging files one over another gives the values and provenance the plain merge gives, kinds switching included."""
    ours, ours_prov, theirs, theirs_prov = {}, {}, {}, {}
    for i, layer in enumerate(layers):
        layer_prov = {p: f"file{i}" for p in flatten(layer)}
        spec_load._merge(ours, ours_prov, layer, layer_prov)
        reference_merge(theirs, theirs_prov, layer, layer_prov)
    assert ours == theirs and ours_prov == theirs_prov
