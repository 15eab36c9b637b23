"""`nanogpt.weights`, as plugins written before the layout move import it (the registry's documented
example used `from nanogpt.weights import load_pretrained`): every name is nanogpt.models.weights'
own, with a DeprecationWarning that names the new home. Nothing in the product imports this module."""

from __future__ import annotations

import warnings
from typing import Any

from nanogpt.models import weights


def __getattr__(name: str) -> Any:
    value = getattr(weights, name)
    warnings.warn(f"nanogpt.weights.{name} is nanogpt.models.weights.{name} now; import it from there",
                  DeprecationWarning, stacklevel=2)
    return value
