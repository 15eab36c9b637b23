"""Where the spec half lived before the layout move: now nanogpt.config.

Kept only for plugins written against the registry's documented example of that time
(`from nanogpt.spec.tables import ModelSpec`), which must keep loading; new code imports
nanogpt.config. Nothing in the product imports this package.

May import: nanogpt.config only.
"""
