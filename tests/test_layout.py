"""The package's shape, held: imports flow one way down the layers nanogpt/__init__.py lists, no
two modules import each other, the spec half imports no torch, and no room is too big to hold."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import nanogpt
from tests.conftest import REPO

PACKAGE = REPO / "nanogpt"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path, name: str | None = None) -> set[str]:
    """Every nanogpt module `path` (module `name`) imports, at the top or inside a function,
    type-only or not.

    `from nanogpt.x import y` counts as an import of nanogpt.x.y when that is a module, else of
    nanogpt.x; a relative import is resolved against the module's own package."""
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "nanogpt")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "nanogpt":
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in MODULES else base)
    found.discard(name)
    return found


def layer_of(module: str) -> int:
    """The index in nanogpt.LAYERS of the layer holding `module` (0 is the top)."""
    best, index = "", None
    for i, (_, members) in enumerate(nanogpt.LAYERS):
        for member in members:
            inside = module.startswith(member + ".") and member != "nanogpt"  # the root holds only itself
            if (module == member or inside) and len(member) > len(best):
                best, index = member, i
    assert index is not None, f"{module} is in no layer of nanogpt.LAYERS"
    return index


GRAPH = {name: imported_modules(path) for name, path in MODULES.items()}


def test_every_module_has_a_layer():
    """Each module of the package is placed in exactly one layer, and each layer names what exists."""
    for name in MODULES:
        layer_of(name)
    for _, members in nanogpt.LAYERS:
        for member in members:
            assert member in MODULES, f"nanogpt.LAYERS names {member}, which is not a module or package"


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Each import of a module in a layer above the importer's, in words."""
    return [
        f"{name} ({nanogpt.LAYERS[layer_of(name)][0]}) imports {target} ({nanogpt.LAYERS[layer_of(target)][0]})"
        for name, targets in graph.items()
        for target in sorted(targets)
        if layer_of(target) < layer_of(name)
    ]


def test_imports_flow_down_the_layers():
    """No module imports one of a layer above its own (nanogpt.LAYERS, top first)."""
    assert upward_imports(GRAPH) == []


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_two_modules_import_each_other():
    """The import graph has no cycle, directly (a imports b imports a) or through others; a
    package's __init__ counts as a module of its own."""
    assert cycles(GRAPH) == []


def test_the_cycle_finder_finds_cycles():
    """The check above can fail: a two-module and a three-module cycle are both reported."""
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": set()}) == [["a", "b"], ["c", "d", "e"]]


def test_the_layer_check_sees_an_upward_import(tmp_path):
    """The layer check can fail: a spec-half module that imported the runner inside a function,
    or a model module that imported a run's manifest type-only, is reported."""
    bad = tmp_path / "tables.py"
    bad.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from nanogpt.runs import manifest\n"
        "def f():\n    from nanogpt.training.runner import run\n"
    )
    found = imported_modules(bad, "nanogpt.config.tables")
    assert found == {"nanogpt.training.runner", "nanogpt.runs.manifest"}
    assert len(upward_imports({"nanogpt.config.tables": found})) == 2
    assert upward_imports({"nanogpt.training.runner": {"nanogpt.config.tables"}}) == []


HEAVY = ("torch", "numpy", "tiktoken", "transformers", "datasets", "tensorboard", "matplotlib", "safetensors", "tokenizers")


def test_the_spec_half_imports_no_torch():
    """Nothing in nanogpt.config (or the registry) names a heavy package, even inside a function."""
    named = []
    for name, path in MODULES.items():
        if not (name.startswith("nanogpt.config") or name == "nanogpt.registry"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                roots = [(node.module or "").split(".")[0]]
            else:
                continue
            named += [f"{name} imports {root}" for root in roots if root in HEAVY]
    assert named == []


def test_loading_and_checking_a_spec_leaves_torch_unimported(repo):
    """In a fresh process, every module of the spec half imported and a shipped spec loaded,
    checked and written: torch and numpy are still not in sys.modules."""
    spec_half = [n for n in MODULES if n.startswith("nanogpt.config")] + ["nanogpt.registry"]
    code = (
        "import importlib, sys\n"
        f"for m in {spec_half!r}: importlib.import_module(m)\n"
        "from nanogpt.config.load import load_spec\n"
        "from nanogpt.config.canonical import to_toml\n"
        f"exp, _ = load_spec({str(repo / 'experiments' / 'gpt2_owt.toml')!r})\n"
        "to_toml(exp)\n"
        "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def sizes() -> list[tuple[str, str, int]]:
    """(kind, qualified name, lines) of every class and function in the package."""
    found = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))

        def walk(node: ast.AST, prefix: str) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    kind = "class" if isinstance(child, ast.ClassDef) else "function"
                    qualified = f"{prefix}.{child.name}"
                    found.append((kind, qualified, child.end_lineno - child.lineno + 1))
                    walk(child, qualified)

        walk(tree, name)
    return found


@pytest.mark.parametrize("kind, limit", [("class", 200), ("function", 80)])
def test_no_room_too_big_to_hold(kind, limit):
    """No class is over 200 lines and no function over 80 (decorators and docstrings included)."""
    assert [(q, n) for k, q, n in sizes() if k == kind and n > limit] == []


def test_each_package_says_what_it_holds_and_may_import():
    """Every package's __init__.py has a docstring that says what lives there and, in a line
    starting "May import", what it may import."""
    missing = []
    for path in sorted(PACKAGE.rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        if len(doc.splitlines()) < 3 or not re.search(r"^May import", doc, re.M):
            missing.append(str(path.relative_to(REPO)))
    assert missing == []
