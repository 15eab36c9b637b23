"""Every command the README and docs/ show is run, and prints what the page says it prints.

A page's ```console blocks are run in order, in one scratch folder per page (with a copy of
experiments/), as a user would type them: `$ COMMAND` lines (a line ending in `\\` goes on), each
followed by the output the page shows. A block of shell commands that is not run says why, in an
HTML comment right above it: `<!-- not run: needs 8 GPUs -->`.

The comparison reads the output as the product prints it, minus what no two runs share:
- a line `...` stands for any number of lines;
- run and sweep ids (`20261130-215531-5a42`), timings (`ms/iter`, `tok/s`, `mfu`, `in 0.5 s`, `bench`'s figures) and the
  columns of a table headed `age`, `avg tok/s`, `tokens_per_sec` or `wall_seconds` are not compared;
- counts are exact, and other numbers agree to 1% (bf16 on another CPU family rounds differently: the quickstart's val
  loss is 1.8121 on AMD's AVX512-BF16 and 1.8111 on Intel's AMX), a signed difference such as diff's `(+0.0069)` to
  10% (the difference of two such numbers); everything else is compared exactly, word for word (a table's column
  widths follow its numbers).
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from tests.conftest import REPO

PAGES = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
SHELL_FENCES = {"console", "bash", "sh", "shell"}
TRAINS = re.compile(r"\b(nanogpt run|nanogpt\.run|nanogpt sweep|torchrun|nanogpt bench|nanogpt sample|nanogpt perplexity)\b")

VOLATILE = [
    re.compile(r"\b\d{8}-\d{6}-[0-9a-f]{4}\b"),  # run and sweep ids
    re.compile(r"[\d.,]+ ms/iter"),
    re.compile(r"[\d.,]+ tok/s"),
    re.compile(r"mfu [\d.]+%"),
    re.compile(r"\bin [\d.]+ s\b"),
    re.compile(r"\b[\d.]+ s/iter\b"),
    re.compile(r"^  (warm-up|ms/iter|tokens/s|MFU|peak mem):.*$"),  # bench's report: every figure is a timing
]
VOLATILE_COLUMNS = {"age", "avg tok/s", "tokens_per_sec", "wall_seconds", "ms/iter", "tok/s", "mfu"}


@attrs.frozen
class Command:
    line: int  # where the command is in its page, for the failure message
    text: str
    expected: list[str]


@attrs.frozen
class Block:
    line: int
    fence: str
    not_run: str | None  # the reason, when the page says it is not run
    commands: list[Command]


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of shell commands in a page, with the commands and outputs of each."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        opening = re.match(r"^(\s*)```(\w*)\s*$", lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = opening.groups()
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        body = [line[len(indent) :] for line in lines[i + 1 : end]]
        if fence in SHELL_FENCES or (
            not fence and any(line.startswith("$ ") for line in body)
        ):
            above = next(
                (lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), ""
            )
            marker = re.fullmatch(r"<!-- not run: (.+) -->", above)
            found.append(
                Block(
                    i + 1,
                    fence,
                    marker.group(1) if marker else None,
                    _commands(body, i + 2),
                )
            )
        i = end + 1
    return found


def _commands(body: list[str], first_line: int) -> list[Command]:
    commands: list[Command] = []
    text, start, expected = None, 0, []

    def close() -> None:
        while expected and not expected[-1].strip():
            expected.pop()  # a blank line between one command's output and the next `$` is the page's layout
        commands.append(Command(start, text, expected))

    k = 0
    while k < len(body):
        line = body[k]
        if line.startswith("$ "):
            if text is not None:
                close()
            start, text, expected = first_line + k, line[2:], []
            while text.endswith("\\") and k + 1 < len(body):
                k += 1
                text += (
                    "\n" + body[k]
                )  # bash reads the backslash-newline as the user's shell does
        elif text is not None:
            expected.append(line)
        k += 1
    if text is not None:
        close()
    return commands


def _fields(line: str) -> list[str]:
    for pattern in VOLATILE:
        line = pattern.sub(
            lambda m: f"{m.group(1)}: <varies>" if m.groups() else "<varies>", line
        )
    return re.split(r"\s{2,}", line.strip())


def _number(word: str) -> float | None:
    try:
        return float(word.strip("(),:;%x+").replace(",", ""))
    except ValueError:
        return None


def _same_field(expected: str, actual: str) -> bool:
    a, b = expected.split(), actual.split()
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x == y:
            continue
        nx, ny = _number(x), _number(y)
        whole = not re.search(r"[.eE]", x)  # counts (iterations, tokens, parameters) are exact
        signed = x.lstrip("(").startswith(("+", "-"))  # a difference of two close numbers magnifies their error
        if nx is None or ny is None or whole or not math.isclose(nx, ny, rel_tol=0.1 if signed else 0.01):
            return False
    return True


def _same_line(expected: str, actual: str, volatile_columns: frozenset[int]) -> bool:
    a, b = _fields(expected), _fields(actual)
    if len(a) != len(b):
        return False
    return all(
        k in volatile_columns or _same_field(x, y) for k, (x, y) in enumerate(zip(a, b))
    )


def matches(expected: list[str], actual: list[str]) -> bool:
    """Whether the output a page shows stands for the output a command printed (rules: the module's docstring)."""

    @functools.cache
    def match(i: int, j: int, columns: frozenset[int]) -> bool:
        if i == len(expected):
            return j == len(actual)
        if expected[i].strip() == "...":
            return any(match(i + 1, k, columns) for k in range(j, len(actual) + 1))
        if j == len(actual):
            return False
        header = _fields(expected[i])
        if any(name in VOLATILE_COLUMNS for name in header) and len(header) > 2:
            columns = frozenset(k for k, name in enumerate(header) if name in VOLATILE_COLUMNS)
        return _same_line(expected[i], actual[j], columns) and match(i + 1, j + 1, columns)

    return match(0, 0, frozenset())


def _environment(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(home / ".hf"))
    env.update(COLUMNS="200", PYTHONUNBUFFERED="1")  # stdout and stderr in the order a terminal shows them
    env.pop("OMP_NUM_THREADS", None)  # the pages' outputs come from runs that use every core, as a user's do
    return env


def run_page(page: Path, workdir: Path) -> list[str]:
    """Run the page's console blocks in order in `workdir`; the differences found, one message each."""
    shutil.copytree(REPO / "experiments", workdir / "experiments")
    env = _environment(workdir)
    failures = []
    for block in blocks(page):
        if block.fence != "console" or block.not_run:
            continue
        for command in block.commands:
            done = subprocess.run(
                ["bash", "-c", command.text], cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, timeout=900, check=False,
            )
            actual = done.stdout.splitlines()
            if not matches(command.expected, actual):
                failures.append(
                    f"{page.name}:{command.line}: $ {command.text}\n--- page shows\n"
                    + "\n".join(command.expected)
                    + "\n--- printed (exit %d)\n" % done.returncode
                    + "\n".join(actual)
                )
    return failures


def _page_param(page: Path):
    run = [c.text for b in blocks(page) if b.fence == "console" and not b.not_run for c in b.commands]
    trains = any(TRAINS.search(text) for text in run)
    return pytest.param(page, id=page.name, marks=[pytest.mark.slow] if trains else [])


@pytest.mark.parametrize("page", [_page_param(p) for p in PAGES])
def test_every_command_shown_prints_what_the_page_shows(page, tmp_path):
    failures = run_page(page, tmp_path)
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_shell_block_is_run_or_says_why_not(page):
    """A block of shell commands is a console block the tests run, or it carries the reason it is not."""
    # (a plain ``` block of `$ ` lines counts as shell: label it console, or say why it is not run)
    unexplained = [f"{page.name}:{b.line}: ```{b.fence}" for b in blocks(page) if b.fence != "console" and not b.not_run]
    assert unexplained == []
    empty = [f"{page.name}:{b.line}" for b in blocks(page) if b.fence == "console" and not b.commands]
    assert empty == [], "a console block with no `$ ` command runs nothing"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_lead_somewhere(page):
    """Every relative link and image of a page names a file of the repository (and a heading of it, for `#...`)."""
    text = page.read_text(encoding="utf-8")
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists() or (anchor and file.suffix == ".md" and anchor not in _anchors(file)):
            broken.append(target)
    assert broken == []


def _anchors(page: Path) -> set[str]:
    headings = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}  # GitHub's slugs


def test_the_checker_fails_on_what_a_page_gets_wrong():
    """The rules find a wrong word, a wrong number, a missing or extra line, and let through only
    what varies by design."""
    printed = [
        "run: shakespeare_char -> runs/shakespeare_char/20261207-010203-ab12",
        "iter 0: loss 4.3697, lr 1.98e-05, 23.0 ms/iter, 33,428 tok/s, mfu 18.5%",
        "name              run id  status     iter  best val  avg tok/s  age",
        "shakespeare_char  lr1e-3  completed  200   2.4946    2,019      1m",
        "done: 2000 iterations, best val loss 1.8121",
    ]
    shown = [
        "run: shakespeare_char -> runs/shakespeare_char/20261129-003414-3dad",
        "iter 0: loss 4.3697, lr 1.98e-05, 41.7 ms/iter, 18,000 tok/s, mfu 9.9%",
        "name              run id  status     iter  best val  avg tok/s  age",
        "shakespeare_char  lr1e-3  completed  200   2.4946    12,019      15m",
        "done: 2000 iterations, best val loss 1.8111",
    ]
    assert matches(shown, printed)
    assert matches([shown[0], "...", shown[4]], printed)
    assert matches(["..."], printed)
    wrong = [
        (1, "iter 0: loss 4.5697, lr 1.98e-05, 23.0 ms/iter, 33,428 tok/s, mfu 18.5%"),  # a loss off by 4%
        (3, "shakespeare_char  lr1e-3  failed     200   2.4946    2,019      1m"),  # a word
        (3, "shakespeare_char  lr1e-3  completed  201   2.4946    2,019      1m"),  # a count, off by less than 1%
        (4, "done: 2000 iterations, best val loss 1.9121"),
    ]
    for index, line in wrong:
        assert not matches(shown[:index] + [line] + shown[index + 1 :], printed), line
    assert not matches(shown[:-1], printed)  # a line the page leaves out
    assert not matches(shown + ["sample:"], printed)  # a line the command did not print
    assert not matches([shown[0], "...", "done: 3000 iterations, best val loss 1.8121"], printed)
    assert matches(["metrics.val_loss: 2.48839 -> 2.49455 (+0.006168)"], ["metrics.val_loss: 2.4889 -> 2.49459 (+0.005695)"])
    assert not matches(["metrics.val_loss: 2.48839 -> 2.49455 (+0.006168)"], ["metrics.val_loss: 2.4889 -> 2.49459 (-0.005695)"])


def test_blocks_are_read_as_a_user_reads_them(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "Text.\n\n```console\n$ nanogpt check a.toml \\\n    b=1\nok: a.toml\n$ echo hi\nhi\n```\n\n"
        "<!-- not run: needs 8 GPUs -->\n```bash\ntorchrun --nproc_per_node=8 x\n```\n\n```bash\nls\n```\n",
        encoding="utf-8",
    )
    found = blocks(page)
    assert [(b.fence, b.not_run) for b in found] == [("console", None), ("bash", "needs 8 GPUs"), ("bash", None)]
    assert [(c.text, c.expected) for c in found[0].commands] == [
        ("nanogpt check a.toml \\\n    b=1", ["ok: a.toml"]),
        ("echo hi", ["hi"]),
    ]
