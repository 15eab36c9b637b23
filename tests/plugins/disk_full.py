"""A test plugin: when DISK_FULL_AT_STEP is set, the checkpoint of that step is written to /dev/full.

Writing there fails as writing to a full disk does, with ENOSPC from the kernel, after the
checkpoint's temporary file was opened: what a run meets when its disk fills up mid-save.
"""

from __future__ import annotations

import os

import nanogpt.checkpoints.files as checkpoint

_step = os.environ.get("DISK_FULL_AT_STEP")

if _step is not None:
    _real_save = checkpoint.torch.save

    def _save_to_a_full_disk(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("iter") == int(_step):
            with open("/dev/full", "wb", buffering=0) as full:
                return _real_save(obj, full, *args, **kwargs)
        return _real_save(obj, f, *args, **kwargs)

    checkpoint.torch.save = _save_to_a_full_disk
