"""The torch-free half: specs read, merged, overridden, validated, written, hashed and diffed.

- tables.py: one frozen attrs class per spec table (attribute docstrings become the schema's
  descriptions); checks.py: their field validators; problems.py: `Problem` and `SpecError`.
- load.py: TOML, `extends`, overrides, plugins, pretrained architectures, provenance;
  convert.py: raw dicts <-> spec classes through cattrs, every problem collected.
- canonical.py: the resolved spec as TOML and its `spec_sha256`; jsonschema.py: the JSON Schema;
  dotted.py: nested records as dotted paths, their differences, and the fields that cannot
  change results; sweep.py: sweep axes and the `[sweep]` table expanded into members.
- pretrained.py: the architecture of the weights `model.init_from` names, read without torch;
  sizes.py: what a model's sizes come to (parameters, FLOPs), the one count every part uses.

May import: the foundation (nanogpt.errors, fileio, contracts) and nanogpt.registry, never torch,
numpy or any other package of nanogpt: `check`, `show` and `schema` run in a fraction of a second
because of it (tests/test_layout.py holds both rules).
"""
