"""The torch-free half: specs read, merged, overridden, validated, written, hashed and diffed."""

from nanogpt.spec.canonical import resolved, spec_sha256, to_toml
from nanogpt.spec.errors import Problem, SpecError
from nanogpt.spec.load import SpecOrigin, load_spec, loads_spec
from nanogpt.spec.tables import Experiment

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
