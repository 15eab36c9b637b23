"""Run under torchrun: shard a GPT with the product's FSDP2 sharding in bfloat16 (FSDP's mixed
precision), run the first of several micro-steps with gradient sync off, as TrainStep does, and print
the bytes of gradients FSDP holds unsharded until the last micro-step reduces them.

One JSON line per rank: {"rank", "accumulated_bytes", "params"} (params: the model's elements, whole)."""

import json
import sys

import torch
import torch.distributed as dist

from nanogpt.config.tables import SystemSpec
from nanogpt.models.gpt import GPT, GPTConfig
from nanogpt.training.dist import DistEnv
from nanogpt.training.parallel import shard

sizes = json.loads(sys.argv[1])
env = DistEnv.from_env(SystemSpec(device="cpu", dtype="bfloat16", parallel="fsdp"))
torch.manual_seed(0)
model = shard(GPT(GPTConfig(**sizes)), env)
x = torch.randint(0, sizes["vocab_size"], (2, sizes["block_size"]))
model.set_requires_gradient_sync(False)  # an early micro-step: nothing reduced yet
model(x, x)[1].backward()
held = 0
for module in model.modules():
    state = getattr(module, "_get_fsdp_state", None)
    group = state()._fsdp_param_group if state is not None else None
    for p in group.fsdp_params if group is not None else ():
        grad = p.unsharded_accumulated_grad if p.unsharded_accumulated_grad is not None else p._unsharded_param.grad
        if grad is not None:
            held += grad.numel() * grad.element_size()
print(json.dumps({"rank": dist.get_rank(), "accumulated_bytes": held,
                  "params": sum(p.full_tensor().numel() for p in model.parameters())}), flush=True)
env.close(barrier=False)
