"""The canonical resolved form of a spec: the TOML `show` prints, and the hash of it.

Every field is spelled out (defaults included), so two specs that differ only in formatting, key
order, the int-or-float spelling of a number, or defaults stated versus left out have the same
canonical form and the same `spec_sha256`. TOML has no null: an optional field that is unset
(`logging.run_id`, `model.vocab_size`, ...) is written as a comment, `# run_id = (unset)`, so
the text still names every field and reads back as the same spec.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import tomli_w

from nanogpt.config.convert import converter, structure, unstructure
from nanogpt.config.tables import Experiment


def resolved(exp: Experiment) -> dict[str, Any]:
    """The spec as plain data: every field, tables in their fixed order, no `extends`."""
    return unstructure(exp)


UNSET = "(unset)"
"""What an unset optional field's comment line says in place of a value."""


def to_toml(exp: Experiment) -> str:
    """The resolved spec as TOML: what `show` prints and what a run saves as spec.toml."""
    return "\n".join(_table_lines(converter.unstructure(exp), ())) + "\n"


def _table_lines(table: dict[str, Any], path: tuple[str, ...]) -> list[str]:
    lines = [
        f"# {_key(k)} = {UNSET}" if v is None else f"{_key(k)} = {toml_value(v)}"
        for k, v in table.items()
        if not isinstance(v, dict)
    ]
    for k, v in table.items():
        if isinstance(v, dict):
            header = ".".join(_key(p) for p in (*path, k))
            lines += ["", f"[{header}]", *_table_lines(v, (*path, k))]
    return lines


def _key(key: str) -> str:
    return tomli_w.dumps({key: 0})[: -len(" = 0\n")]


def toml_value(value: Any) -> str:
    """One value as TOML text on one line (tomli_w always breaks arrays over several): what `show`
    prints after `key = `, and what an override word holds after `key=`."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return tomli_w.dumps({"v": value})[len("v = ") : -1]


def spec_sha256(exp: Experiment) -> str:
    """sha256 of the canonical JSON of the resolved spec."""
    return sha256_of_data(resolved(exp))


def sha256_of_data(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def as_read_today(recorded: Any) -> Any:
    """A recorded resolved spec (a manifest's or a checkpoint's) re-read through today's spec classes.

    What a run recorded was every field its code knew; a field added since is absent there and
    takes its default here, so an old run compares and hashes equal to the spec that would make
    it today. Every comparison or hash of a recorded spec goes through this. A recorded spec that
    today's classes do not take (a field they no longer know, a value they now refuse, a plugin
    kind not imported) comes back as it was: compared raw, what differs is shown, never dropped.
    """
    if not isinstance(recorded, dict):
        return recorded
    try:
        exp, problems = structure(recorded)
    except (TypeError, ValueError, RecursionError):  # a hand-edited manifest is no spec at all
        return recorded
    return recorded if exp is None else resolved(exp)


def results_sha256(spec: dict[str, Any]) -> str:
    """sha256 of a resolved spec (as manifests hold it) without the fields that cannot change results.

    Two runs with the same `results_sha256` train the same numbers, whatever their names, output
    folders or run ids (`INERT_FIELDS`, the ones `diff` marks `[no effect on results]`).
    """
    from nanogpt.config.dotted import INERT_FIELDS, flatten, under

    return sha256_of_data(sorted((p, v) for p, v in flatten(spec).items() if not under(p, INERT_FIELDS)))
