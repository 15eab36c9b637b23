"""A test plugin: counts the blocks model.py runs under activation checkpointing.

At exit it writes the count to the file COUNT_RECOMPUTE_FILE names.
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path

import nanogpt.models.gpt

calls = 0
_checkpoint = nanogpt.models.gpt.checkpoint


def counting_checkpoint(*args, **kwargs):
    global calls
    calls += 1
    return _checkpoint(*args, **kwargs)


nanogpt.models.gpt.checkpoint = counting_checkpoint


@atexit.register
def _write() -> None:
    Path(os.environ["COUNT_RECOMPUTE_FILE"]).write_text(str(calls))
