"""A test plugin: counts DDP's gradient all-reduces per optimizer step, on each rank.

Every DistributedDataParallel made in the process gets a communication hook that notes (optimizer
step, bucket) and then all-reduces the bucket exactly as DDP's default hook does; a global optimizer
hook counts the steps. At exit, each rank writes its notes to $ALLREDUCE_LOG/rank<RANK>.json.
"""

from __future__ import annotations

import atexit
import json
import os
from pathlib import Path

from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel
from torch.optim.optimizer import register_optimizer_step_post_hook

steps = [0]
calls: list[tuple[int, int]] = []


def _count_step(optimizer, args, kwargs) -> None:
    steps[0] += 1


def _counting_allreduce(process_group, bucket):
    calls.append((steps[0], bucket.index()))
    return default_hooks.allreduce_hook(process_group, bucket)


_real_init = DistributedDataParallel.__init__


def _init(self, *args, **kwargs):
    _real_init(self, *args, **kwargs)
    self.register_comm_hook(None, _counting_allreduce)


def _write() -> None:
    out = Path(os.environ["ALLREDUCE_LOG"]) / f"rank{os.environ.get('RANK', '0')}.json"
    out.write_text(json.dumps({"steps": steps[0], "calls": calls}))


if os.environ.get("ALLREDUCE_LOG"):
    DistributedDataParallel.__init__ = _init
    register_optimizer_step_post_hook(_count_step)
    atexit.register(_write)
