"""Paths a manifest names are never followed outside the run's checkpoints/: each of the two layers
that guard them (`inside`: within the run dir, links resolved; `directly_in_checkpoints`: directly
in checkpoints/) tested alone, with the attacks only it stops, and both together as a property over
path shapes checked against an oracle of their own (os.path.realpath)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanogpt.checkpoints import catalog
from nanogpt.fileio import sha256_file

ZERO = "0" * 64


def make_tree(root: Path, *, checkpoints_linked_elsewhere: bool = False) -> Path:
    """A run dir with checkpoints (regular, nested, linked in and out, a unicode name) and files
    outside it; returns the run dir. With `checkpoints_linked_elsewhere`, run/checkpoints is a link
    to a folder outside the run holding checkpoint files of its own."""
    (root / "outside.pt").write_text("outside")
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "ckpt-00000001.pt").write_text("elsewhere 1")
    (elsewhere / "ckpt-00000002.pt").write_text("elsewhere 2")
    run = root / "run"
    run.mkdir()
    (run / "manifest.json").write_text("{}")
    (run / "spec.toml").write_text('name = "x"\n')
    if checkpoints_linked_elsewhere:
        os.symlink(elsewhere, run / "checkpoints")
        return run
    ckpts = run / "checkpoints"
    ckpts.mkdir()
    (ckpts / "ckpt-00000001.pt").write_text("one")
    (ckpts / "ckpt-00000002.pt").write_text("two")
    (ckpts / "ckpt-ünïcødé-😀.pt").write_text("unicode")
    (ckpts / "sub").mkdir()
    (ckpts / "sub" / "ckpt-00000003.pt").write_text("nested")
    os.symlink(root / "outside.pt", ckpts / "out-link.pt")  # a file link leading out
    os.symlink("ckpt-00000001.pt", ckpts / "in-link.pt")  # a file link to a sibling: stays inside
    os.symlink(elsewhere, ckpts / "dir-link")  # a folder link leading out
    os.symlink("../..", ckpts / "up-link")  # a folder link to the run's parent
    return run


def every_file(root: Path) -> dict[str, str]:
    """Each regular file under `root` (links not followed) and its text: what must survive prune."""
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if not path.is_symlink():
                found[str(path.relative_to(root))] = path.read_text()
    return found


def entries(paths: list[object]) -> list[dict]:
    return [{"path": p, "step": i + 1, "sha256": ZERO} for i, p in enumerate(paths)]


def layer_off(monkeypatch, layer: str) -> None:
    """Turn one guard into a no-op. `inside` still resolves links (the other layer compares resolved
    paths), but no longer refuses what lands outside the run dir."""
    if layer == "inside":
        monkeypatch.setattr(catalog, "inside", lambda d, r: (Path(d) / r).resolve() if isinstance(r, str) and r else None)
    else:
        monkeypatch.setattr(catalog, "directly_in_checkpoints", lambda run_dir, path: True)


# --------------------------------------------------------------------------- each layer alone


@pytest.mark.parametrize("off", ["inside", "directly_in_checkpoints"])
def test_either_layer_alone_stops_paths_that_climb_out(tmp_path: Path, monkeypatch, off: str):
    """With either layer a no-op, the other still refuses `..`, absolute paths and links to files
    elsewhere: recorded_checkpoints leaves them out, and prune deletes nothing outside the run."""
    run = make_tree(tmp_path)
    before = every_file(tmp_path)
    attacks = ["../outside.pt", str(tmp_path / "outside.pt"), "checkpoints/../../outside.pt",
               "checkpoints/out-link.pt", "checkpoints/dir-link/ckpt-00000001.pt", "checkpoints/up-link/outside.pt"]
    layer_off(monkeypatch, off)
    kept, ignored = catalog.recorded_checkpoints(run, entries(attacks))
    assert kept == [] and len(ignored) == len(attacks), (off, kept)
    catalog.prune(run, entries(attacks), keep=0)
    assert every_file(tmp_path) == before


def test_only_the_run_dir_layer_stops_a_checkpoints_folder_linked_elsewhere(tmp_path: Path, monkeypatch):
    """run/checkpoints a link to a folder outside the run, its files recorded with their true sha256:
    resolved, they sit directly in (resolved) checkpoints/, so only `inside` can refuse them. None is
    loaded, none is pruned; and with `inside` a no-op they would be (so this attack needs that layer)."""
    run = make_tree(tmp_path, checkpoints_linked_elsewhere=True)
    before = every_file(tmp_path)
    recorded = [{"path": f"checkpoints/ckpt-0000000{s}.pt", "step": s, "sha256": sha256_file(tmp_path / "elsewhere" / f"ckpt-0000000{s}.pt")}
                for s in (1, 2)]
    layer_off(monkeypatch, "directly_in_checkpoints")
    kept, ignored = catalog.recorded_checkpoints(run, recorded)
    assert kept == [] and len(ignored) == 2 and all("never followed" in line for line in ignored)
    catalog.prune(run, recorded, keep=0)
    assert every_file(tmp_path) == before
    monkeypatch.undo()
    assert catalog.recorded_checkpoints(run, recorded)[0] == []
    layer_off(monkeypatch, "inside")
    assert all(catalog.confined_checkpoint(run, e["path"]) is not None for e in recorded)


def test_only_the_checkpoints_layer_stops_the_runs_own_files(tmp_path: Path, monkeypatch):
    """Entries naming the run's own files, checkpoints/ itself, or a checkpoint one folder down all lie
    within the run dir, so only `directly_in_checkpoints` can refuse them: none is loaded, prune deletes
    none of them (nor checkpoints/ with everything in it); with that layer a no-op they would be."""
    run = make_tree(tmp_path)
    before = every_file(tmp_path)
    attacks = ["manifest.json", "spec.toml", "checkpoints", "checkpoints/", ".", "checkpoints/sub/ckpt-00000003.pt"]
    layer_off(monkeypatch, "inside")
    kept, ignored = catalog.recorded_checkpoints(run, entries(attacks))
    assert kept == [] and len(ignored) == len(attacks), kept
    catalog.prune(run, entries(attacks), keep=0)
    assert every_file(tmp_path) == before
    monkeypatch.undo()
    layer_off(monkeypatch, "directly_in_checkpoints")
    assert all(catalog.confined_checkpoint(run, p) is not None for p in attacks if p != ".")


# -------------------------------------------------------------------- both, over path shapes


SEGMENTS = st.sampled_from([
    "..", ".", "", "checkpoints", "ckpt-00000001.pt", "ckpt-00000002.pt", "ckpt-ünïcødé-😀.pt", "sub",
    "ckpt-00000003.pt", "out-link.pt", "in-link.pt", "dir-link", "up-link", "manifest.json", "spec.toml",
    "run", "elsewhere", "outside.pt", "nope.pt",
])


@st.composite
def hostile_paths(draw, root: str) -> object:
    """A path as an edited manifest might hold it: segments of the tree's names, `..`, `.`, empty
    ones (`//`), unicode, nested to any depth, relative or absolute (from `/`, the tree's root or the
    run); now and then any text at all (NUL included) or not a string."""
    kind = draw(st.sampled_from(["relative", "relative", "relative", "absolute", "text", "other"]))
    if kind == "text":
        return draw(st.text(max_size=20))
    if kind == "other":
        return draw(st.one_of(st.none(), st.integers(), st.lists(st.just("ckpt-00000001.pt"), max_size=1)))
    start = draw(st.sampled_from(["", "checkpoints/", "checkpoints/", "./checkpoints//", "../run/checkpoints/", "checkpoints/sub/"]))
    path = start + "/".join(draw(st.lists(SEGMENTS, min_size=1, max_size=5)))
    if kind == "absolute":
        path = draw(st.sampled_from(["/", root + "/", root + "/run/"])) + path
    return path


def expected_checkpoint(run: Path, path: object) -> str | None:
    """The oracle: what `path` names once every link is resolved, relative to the run, if that is a
    file (or folder) whose parent is literally <the run, resolved>/checkpoints; else None."""
    if not isinstance(path, str) or not path or "\x00" in path:
        return None
    real_run = os.path.realpath(run)
    real = os.path.realpath(os.path.join(run, path))  # an absolute `path` replaces the run, as in the code
    if os.path.dirname(real) != os.path.join(real_run, "checkpoints") or not os.path.isfile(real):
        return None
    return os.path.relpath(real, real_run)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), linked=st.booleans())
def test_hostile_manifest_paths_never_lead_outside_checkpoints(data, linked: bool):
    """Property over path shapes: recorded_checkpoints keeps exactly the entries whose path, links
    resolved, names a file directly in the run's own checkpoints/ (by an oracle of os.path.realpath),
    and prune, told to delete every entry, deletes nothing outside the run's own checkpoints/ (nothing
    at all when checkpoints/ is a link elsewhere)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = make_tree(root, checkpoints_linked_elsewhere=linked)
        paths = data.draw(st.lists(hostile_paths(str(root)), min_size=1, max_size=8), label="paths")
        kept, ignored = catalog.recorded_checkpoints(run, entries(paths))
        # a later entry naming the same file under another step stays; one per step is kept
        expected = {i + 1: expected_checkpoint(run, p) for i, p in enumerate(paths)}
        assert {e["step"]: e["path"] for e in kept} == {s: p for s, p in expected.items() if p is not None}
        assert len(kept) + len(ignored) == len(paths)
        before = every_file(root)
        catalog.prune(run, entries(paths), keep=0)
        deleted = set(before) - set(every_file(root))
        # (an entry naming a folder directly in checkpoints/ goes whole: sharded checkpoints are folders)
        assert all(d.startswith("run/checkpoints/") for d in deleted), (paths, deleted)
        assert not (linked and deleted)
