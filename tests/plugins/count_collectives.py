"""A test plugin: counts the collectives each rank issues from Python, and how DDP was built.

At exit each rank writes COUNT_COLLECTIVES_DIR/rank<R>.json: {"all_reduce_max": n (the stop-flag
agreements), "all_reduce_sum": n, "barrier": n, "broadcast_object_list": n, "all_gather_single": n (FSDP2's
weight gathers), "ddp_broadcast_buffers": [...]}.
"""

from __future__ import annotations

import atexit
import json
import os
from collections import Counter
from pathlib import Path

import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

counts: Counter = Counter()
ddp_broadcast_buffers: list[bool] = []

_all_reduce = dist.all_reduce
_barrier = dist.barrier
_broadcast_object_list = dist.broadcast_object_list
_all_gather_single = dist.all_gather_single
_ddp_init = DistributedDataParallel.__init__


def all_reduce(tensor, op=dist.ReduceOp.SUM, group=None, async_op=False):
    counts["all_reduce_max" if op == dist.ReduceOp.MAX else "all_reduce_sum"] += 1
    return _all_reduce(tensor, op=op, group=group, async_op=async_op)


def barrier(*args, **kwargs):
    counts["barrier"] += 1
    return _barrier(*args, **kwargs)


def broadcast_object_list(*args, **kwargs):
    counts["broadcast_object_list"] += 1
    return _broadcast_object_list(*args, **kwargs)


def all_gather_single(*args, **kwargs):
    # FSDP2 gathers a unit's weights with this (its DefaultAllGather looks it up at each call)
    counts["all_gather_single"] += 1
    return _all_gather_single(*args, **kwargs)


def ddp_init(self, *args, **kwargs):
    ddp_broadcast_buffers.append(kwargs.get("broadcast_buffers", True))
    _ddp_init(self, *args, **kwargs)


dist.all_reduce = all_reduce
dist.barrier = barrier
dist.broadcast_object_list = broadcast_object_list
dist.all_gather_single = all_gather_single
DistributedDataParallel.__init__ = ddp_init


@atexit.register
def _write() -> None:
    out = os.environ.get("COUNT_COLLECTIVES_DIR")
    if out:
        path = Path(out) / f"rank{os.environ.get('RANK', '0')}.json"
        path.write_text(json.dumps({**counts, "ddp_broadcast_buffers": ddp_broadcast_buffers}))
