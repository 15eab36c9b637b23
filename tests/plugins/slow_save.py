"""A test plugin: when SLOW_SAVE_AT_STEP is set, the checkpoint of that step is written slowly
(SLOW_SAVE_AT_STEP=interrupt: the checkpoint a signal asks for, whatever its step).

Half the bytes go to the (temporary) file, a marker file appears, then the writer sleeps, so a
test can SIGKILL the run in the middle of writing a checkpoint.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import nanogpt.checkpoints.files as checkpoint

_step = os.environ.get("SLOW_SAVE_AT_STEP")
_marker = os.environ.get("SLOW_SAVE_MARKER")

if _step is not None:
    _real_save = checkpoint.torch.save

    def _slow(obj) -> bool:
        if not isinstance(obj, dict):
            return False
        if _step == "interrupt":  # the checkpoint of a stop has no val loss
            return obj.get("val_loss", 0) is None and obj.get("iter", 0) > 0
        return obj.get("iter") == int(_step)

    def _slow_save(obj, f, *args, **kwargs):
        if _slow(obj):
            buf = io.BytesIO()
            _real_save(obj, buf, *args, **kwargs)
            data = buf.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            Path(_marker).write_text("writing")
            time.sleep(60)
            f.write(data[len(data) // 2 :])
            return None
        return _real_save(obj, f, *args, **kwargs)

    checkpoint.torch.save = _slow_save
