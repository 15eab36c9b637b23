"""The README and docs/code-map.md against the tree they describe: what a newcomer reads must be what is there."""

from __future__ import annotations

import re

from tests.conftest import REPO


def _first_code_block(page: str, heading: str) -> str:
    text = (REPO / page).read_text(encoding="utf-8")
    return re.search(
        rf"^#+ {heading}\n.*?^```\n(.*?)^```", text, re.DOTALL | re.MULTILINE
    ).group(1)


def test_code_map_names_every_module():
    """docs/code-map.md names every module of the package (its file name, and its folder when it is
    in one), so that a newcomer finds each file where the map says."""
    layout = _first_code_block("docs/code-map.md", "Code map")
    missing = []
    for path in sorted((REPO / "nanogpt").rglob("*.py")):
        if path.name == "__init__.py":
            continue
        relative = path.relative_to(REPO / "nanogpt")
        folder = f"{relative.parent}/" if relative.parent.name else ""
        if not re.search(rf"(?<![\w.]){re.escape(path.name)}(?![\w])", layout) or (
            folder and folder not in layout
        ):
            missing.append(str(relative))
    assert missing == []


def test_readme_code_map_names_every_package():
    """The README's one-line-a-package map names every folder of the package, and nothing that is not one."""
    readme_map = _first_code_block("README.md", "Code map")
    named = set(re.findall(r"^  (\w+)/", readme_map, re.MULTILINE))
    folders = {p.parent.name for p in (REPO / "nanogpt").glob("*/__init__.py")}
    assert named == folders - {
        "spec"
    }  # spec/ only forwards old plugin imports to config/ (docs/code-map.md says so)


def test_no_merge_conflict_markers_were_committed():
    """No text file of the project holds a merge's conflict markers (the README once did, and
    every test still passed: the Layout names were all there, twice)."""
    import subprocess

    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    marked = []
    for name in tracked:
        if not name.endswith(
            (".py", ".md", ".toml", ".json", ".txt", ".cfg", ".yml", ".yaml")
        ):
            continue
        try:
            lines = (REPO / name).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        if any(re.match(r"(<{7} |>{7} |={7}$)", line) for line in lines):
            marked.append(name)
    assert marked == []
