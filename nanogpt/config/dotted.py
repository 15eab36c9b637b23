"""Differences between two nested records (specs, manifests) as dotted paths."""

from __future__ import annotations

from typing import Any

MISSING = object()
"""Stands for a path one side does not have."""

INERT_FIELDS = (
    "name", "description", "logging.", "train.log_interval", "train.keep_checkpoints",
    "train.auto_resume", "train.async_checkpoint", "system.peak_tflops", "system.reshard_after_forward",
)
"""Spec paths that cannot change the numbers a run produces (a trailing dot: the whole table)."""

RESUMABLE_FIELDS = INERT_FIELDS + (
    "train.max_iters", "train.eval_interval", "train.eval_iters", "system.compile", "system.device",
    "system.activation_checkpointing", "system.parallel", "evaluation.",
)
"""Spec paths a resume may change: they cannot change the weights the run arrives at."""


def under(path: str, prefixes: tuple[str, ...]) -> bool:
    """Whether `path` is one of `prefixes` or lies under one (a prefix ending in "." is a table)."""
    return any(path == p.rstrip(".") or path.startswith(p if p.endswith(".") else p + ".") for p in prefixes)


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {dotted.path: leaf}; lists are leaves (they compare as a whole)."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, path))
        else:
            out[path] = value
    return out


def diff_data(a: Any, b: Any) -> list[tuple[str, Any, Any]]:
    """(path, a's value, b's value) for every leaf that differs, in a's order then b's extras.

    A path one side lacks has MISSING on that side.
    """
    fa, fb = flatten(a), flatten(b)
    paths = list(fa) + [p for p in fb if p not in fa]
    return [
        (p, fa.get(p, MISSING), fb.get(p, MISSING))
        for p in paths
        if not _same(fa.get(p, MISSING), fb.get(p, MISSING))
    ]


def _same(x: Any, y: Any) -> bool:
    if x is MISSING or y is MISSING:
        return x is y
    # 1 and 1.0 are the same number in a spec; True and 1 are not the same value
    if isinstance(x, bool) or isinstance(y, bool):
        return type(x) is type(y) and x == y
    return x == y
