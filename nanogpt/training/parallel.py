"""How the processes of a job share the model: `system.parallel = "ddp"` or `"fsdp"`.

Under ddp every process holds the whole model and DDP (nanogpt.training.loop) averages the gradients.
Under fsdp the model is sharded with FSDP2 as torchtitan does it: each transformer block is its
own `fully_shard` unit (its weights gathered just before its forward and backward, freed after),
then the root takes what is left (embeddings, final norm, head); the optimizer is built over the
sharded parameters, so its state is sharded too. Mixed precision is FSDP's policy, not autocast:
the gathered copies are in the run's dtype, the sharded master weights and the gradient reduction
in float32.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from nanogpt.training.dist import DistEnv
from nanogpt.errors import InputError
from nanogpt.registry import MODELS


def build_model(exp: Any, env: DistEnv, vocab_size: int) -> Any:
    """The spec's model on this process's device, sharded over the job under `system.parallel = "fsdp"`.

    Build the optimizer after this: under fsdp its parameters are the sharded ones."""
    model = MODELS.build(exp.model, vocab_size=vocab_size).to(env.device)
    if exp.system.parallel == "fsdp":
        shard(model, env, compile_blocks=exp.system.compile, reshard_after_forward=exp.system.reshard_after_forward)
    return model


def shard(model: Any, env: DistEnv, *, compile_blocks: bool = False, reshard_after_forward: bool = True) -> Any:
    """Shard `model` in place with FSDP2: each of its `blocks`, then the root. Returns it.

    `reshard_after_forward` applies to the blocks; the root always keeps its weights for the backward."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if env.dtype == torch.float16:
        raise InputError(
            "system.parallel = 'fsdp' trains in bfloat16 or float32, and system.dtype came out float16 on this "
            f"device ({env.device}): FSDP's mixed precision has no gradient scaler. Set system.dtype = 'bfloat16' "
            "(slow where the GPU only emulates it) or 'float32'"
        )
    mesh = init_device_mesh(env.device_type, (env.world_size,))
    policy = MixedPrecisionPolicy(
        param_dtype=env.dtype if env.dtype != torch.float32 else None, reduce_dtype=torch.float32,
    )
    for block in getattr(model, "blocks", None) or ():
        if compile_blocks:
            block.compile()  # per block: the graph is the same for every block, compiled once
        fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    # the root's own argument left unset: FSDP2 then keeps its parameters (embeddings, head) gathered
    # from the forward into the backward, which begins with them; passed True, it would gather them
    # again at the start of every micro-step's backward (a third of GPT-2 124M's weights)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def clip_grad_norm_(parameters: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Clip the gradients to a total 2-norm of `max_norm` (inf: only measure it); the norm before clipping.

    Under fsdp each process holds a shard of each gradient: the norm of the shards is reduced over
    the job (`full_tensor`) before anything is scaled, so every process clips by the same factor,
    the one an unsharded model would use."""
    from torch.distributed.tensor import DTensor

    with_grads = [p for p in parameters if p.grad is not None]
    total = torch.nn.utils.get_total_norm([p.grad for p in with_grads], 2.0)
    if isinstance(total, DTensor):
        total = total.full_tensor()
    if max_norm != math.inf:
        torch.nn.utils.clip_grads_with_norm_(with_grads, max_norm, total)
    return total


def local_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes this process holds of `tensors` (a sharded tensor counts its local shard only)."""
    from torch.distributed.tensor import DTensor

    total = 0
    for t in tensors:
        local = t.to_local() if isinstance(t, DTensor) else t
        total += local.numel() * local.element_size()
    return total
