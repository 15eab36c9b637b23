"""The torch-free half: specs read, merged, overridden, validated, written, hashed and diffed.

The names below are imported on first use, not here: `nanogpt.registry` imports
`nanogpt.spec.tables`, and the converter imports the registry back, so an eager import of the
converter from this package would make `import nanogpt.registry` (done first) a circular import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nanogpt.spec.canonical import resolved, spec_sha256, to_toml
    from nanogpt.spec.errors import Problem, SpecError
    from nanogpt.spec.load import SpecOrigin, load_spec, loads_spec
    from nanogpt.spec.tables import Experiment

_HOMES = {
    "Experiment": "nanogpt.spec.tables",
    "Problem": "nanogpt.spec.errors",
    "SpecError": "nanogpt.spec.errors",
    "SpecOrigin": "nanogpt.spec.load",
    "load_spec": "nanogpt.spec.load",
    "loads_spec": "nanogpt.spec.load",
    "resolved": "nanogpt.spec.canonical",
    "spec_sha256": "nanogpt.spec.canonical",
    "to_toml": "nanogpt.spec.canonical",
}

__all__ = [
    "Experiment",
    "Problem",
    "SpecError",
    "SpecOrigin",
    "load_spec",
    "loads_spec",
    "resolved",
    "spec_sha256",
    "to_toml",
]
assert sorted(__all__) == sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
