"""A test plugin: when SLOW_PUBLISH_AT_STEP is set, the sharded checkpoint of that step stops half-way.

Every process has written its shards and DCP its metadata into the temporary directory, but
rank 0 has not yet added state.pt nor renamed the directory into place: a marker file appears
and rank 0 sleeps, so a test can SIGKILL the job in the middle of writing a checkpoint.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import nanogpt.checkpoints.sharded as sharded_checkpoint

_step = os.environ.get("SLOW_PUBLISH_AT_STEP")
_marker = os.environ.get("SLOW_PUBLISH_MARKER")

if _step is not None:
    _real_publish = sharded_checkpoint._publish

    def _slow_publish(tmp, final, head, on_written):
        if head.get("iter") == int(_step):
            Path(_marker).write_text(f"{sorted(os.listdir(tmp))}")
            time.sleep(60)
        return _real_publish(tmp, final, head, on_written)

    sharded_checkpoint._publish = _slow_publish
