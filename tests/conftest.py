"""Shared test setup: the repository's location, Hypothesis without deadlines, a registry guard."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parents[1]

# Timing belongs in benchmarks/: a slow first example (imports, a cold disk) must not fail a test.
settings.register_profile("nanogpt", deadline=None)
settings.load_profile("nanogpt")


@pytest.fixture
def repo() -> Path:
    """The repository root (experiments/, schema/, ...)."""
    return REPO


@pytest.fixture
def restore_registries():
    """Undo every kind a test registers (plugins register for the whole process)."""
    from nanogpt.registry import REGISTRIES

    saved = {r.table: (dict(r._specs), dict(r._builders)) for r in REGISTRIES.values()}
    yield
    for r in REGISTRIES.values():
        specs, builders = saved[r.table]
        r._specs.clear()
        r._specs.update(specs)
        r._builders.clear()
        r._builders.update(builders)
