"""A test plugin: rank 0 of a job prepares its data slowly (SLOW_PREPARE_SECONDS, default 15 s), and
with SLOW_PREPARE_AFTER_WRITE it pauses with its token files half made.

Stands for downloading and tokenizing OpenWebText while the other ranks wait: a test sets the
job's collective timeout below the delay and checks that waiting for the data is not bound by it.
"""

from __future__ import annotations

import os
import time

import nanogpt.data.prepare as prepare_module

_real_prepare = prepare_module.prepare


def _slow_prepare(*args, **kwargs):
    if os.environ.get("RANK", "0") == "0":
        time.sleep(float(os.environ.get("SLOW_PREPARE_SECONDS", "15")))
    return _real_prepare(*args, **kwargs)


prepare_module.prepare = _slow_prepare


# SLOW_PREPARE_AFTER_WRITE: seconds to wait once the token files are written under their temporary
# names, before they are put in place (a signal then finds a dataset half made)
if os.environ.get("SLOW_PREPARE_AFTER_WRITE"):
    _real_stream = prepare_module._prepare_stream

    def _slow_stream(*args, **kwargs):
        out = _real_stream(*args, **kwargs)
        time.sleep(float(os.environ["SLOW_PREPARE_AFTER_WRITE"]))
        return out

    prepare_module._prepare_stream = _slow_stream
