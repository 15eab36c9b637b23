"""The README against the tree it describes: what a newcomer reads must be what is there."""

from __future__ import annotations

import re

from tests.conftest import REPO


def _layout() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return re.search(r"^## Layout\n\n```\n(.*?)^```", text, re.S | re.M).group(1)


def test_layout_names_every_module():
    """The README's Layout section names every module of the package (its file name, and its
    folder for spec/ and data/), so that a newcomer finds each file where the map says."""
    layout = _layout()
    missing = []
    for path in sorted((REPO / "nanogpt").rglob("*.py")):
        if path.name == "__init__.py":
            continue
        relative = path.relative_to(REPO / "nanogpt")
        folder = f"{relative.parent}/" if relative.parent.name else ""
        if not re.search(rf"(?<![\w.]){re.escape(path.name)}(?![\w])", layout) or (folder and folder not in layout):
            missing.append(str(relative))
    assert missing == []


def test_no_merge_conflict_markers_were_committed():
    """No text file of the project holds a merge's conflict markers (the README once did, and
    every test still passed: the Layout names were all there, twice)."""
    import subprocess

    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    marked = []
    for name in tracked:
        if not name.endswith((".py", ".md", ".toml", ".json", ".txt", ".cfg", ".yml", ".yaml")):
            continue
        try:
            lines = (REPO / name).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        if any(re.match(r"(<{7} |>{7} |={7}$)", line) for line in lines):
            marked.append(name)
    assert marked == []
