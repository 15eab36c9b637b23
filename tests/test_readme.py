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
