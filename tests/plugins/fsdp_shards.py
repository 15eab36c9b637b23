"""Run under torchrun: shard a GPT (or a Llama: "kind": "llama" among the sizes) with FSDP2 as fsdp training will, take one AdamW step, print what each rank holds.

One JSON line per rank: the elements of its parameter, gradient and AdamW-state shards (the
local tensors of the DTensors), for tests/test_memory.py to hold against nanogpt.memory.
"""

import json
import sys

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard

from nanogpt.llama import Llama, LlamaConfig
from nanogpt.model import GPT, GPTConfig

sizes = json.loads(sys.argv[1])
llama = sizes.pop("kind", "gpt") == "llama"
dist.init_process_group("gloo")
torch.manual_seed(0)
model = Llama(LlamaConfig(**sizes)) if llama else GPT(GPTConfig(**sizes))
for block in model.model.layers if llama else model.transformer.h:
    fully_shard(block)
fully_shard(model)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
x = torch.randint(0, sizes["vocab_size"], (2, sizes["block_size"]))
_, loss = model(x, x)
loss.backward()
optimizer.step()
print(json.dumps({
    "rank": dist.get_rank(),
    "params": sum(p.to_local().numel() for p in model.parameters()),
    "grads": sum(p.grad.to_local().numel() for p in model.parameters()),
    "optimizer": sum(v.to_local().numel() for s in optimizer.state.values() for k, v in s.items() if k != "step"),
}), flush=True)
dist.destroy_process_group()
