"""Run under torchrun (or alone, a job of one): shard a GPT (or a Llama: "kind": "llama" among the
sizes) with the product's own FSDP2 sharding (nanogpt.training.parallel.shard), take one AdamW step, print
what each rank holds.

One JSON line per rank: the elements of its parameter, gradient and AdamW-state shards (the
local tensors of the DTensors), and the bytes of its parameters and optimizer state, for
tests/perf/test_memory.py and tests/training/test_fsdp.py to hold against nanogpt.perf.memory and each other.
"""

import json
import sys

import torch
import torch.distributed as dist

from nanogpt.training.dist import DistEnv
from nanogpt.models.llama import Llama, LlamaConfig
from nanogpt.models.gpt import GPT, GPTConfig
from nanogpt.training.parallel import local_bytes, shard
from nanogpt.config.tables import SystemSpec

sizes = json.loads(sys.argv[1])
llama = sizes.pop("kind", "gpt") == "llama"
env = DistEnv.from_env(SystemSpec(device="cpu", dtype="float32", parallel="fsdp"))
torch.manual_seed(0)
model = shard(Llama(LlamaConfig(**sizes)) if llama else GPT(GPTConfig(**sizes)), env)
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
    "params_bytes": local_bytes(model.parameters()),
    "optimizer_bytes": local_bytes(v for s in optimizer.state.values() for v in s.values()),
}), flush=True)
env.close(barrier=False)
