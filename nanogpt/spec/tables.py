"""`nanogpt.spec.tables`, as plugins written before the layout move import it: every name is
nanogpt.config.tables' own (the same classes, so a plugin's `ModelSpec` subclass is the registry's),
with a DeprecationWarning that names the new home."""

from __future__ import annotations

import warnings
from typing import Any

from nanogpt.config import tables


def __getattr__(name: str) -> Any:
    value = getattr(tables, name)  # AttributeError for a name tables has not either
    warnings.warn(f"nanogpt.spec.tables.{name} is nanogpt.config.tables.{name} now; import it from there",
                  DeprecationWarning, stacklevel=2)
    return value
