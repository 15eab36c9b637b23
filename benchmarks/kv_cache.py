"""KV-cache sampling against full recompute (the seed's way), 500 new tokens, small model, CPU.

Three generators run on the same weights (the seed model's, loaded into ours untied), the same
prompt and the same sampling seed, so they must produce the same tokens; the script checks that:

  seed            benchmarks/seed_model.py's generate: the whole context re-run for every new token,
                  logits at every position
  ours-recompute  GPT.generate(use_cache=False): the whole context re-run, last position's logits only
  ours-cache      GPT.generate(): a KV cache, one position per new token

    python benchmarks/kv_cache.py
    python benchmarks/kv_cache.py --config small --new-tokens 500 --batch 4 --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seed_model import SeedConfig, SeedGPT  # noqa: E402

from nanogpt.models.gpt import GPT, GPTConfig  # noqa: E402

CONFIGS = {
    # the quickstart's width and depth with room for 500 tokens of context
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, block_size=512, vocab_size=65),
    # nanoGPT's later "baby GPT" for Shakespeare characters, block 1024
    "small": dict(n_layer=6, n_head=6, n_embd=384, block_size=1024, vocab_size=65),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=list(CONFIGS), default="tiny")
    p.add_argument("--new-tokens", type=int, default=500)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2, help="runs per generator; the fastest counts")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = CONFIGS[args.config]
    if args.new_tokens + 1 > cfg["block_size"]:
        p.error(f"--new-tokens {args.new_tokens} does not fit block_size {cfg['block_size']} (past it the cache slides)")

    torch.manual_seed(0)
    seed = SeedGPT(SeedConfig(**cfg)).eval()
    ours = GPT(GPTConfig(**cfg, tie_weights=False)).eval()
    ours.load_state_dict({k: v for k, v in seed.state_dict().items() if not k.endswith(".attn.bias")})  # mask buffers
    prompt = torch.zeros(args.batch, 1, dtype=torch.long)

    generators = {
        "seed": lambda g: seed.generate(prompt, args.new_tokens, generator=g),
        "ours-recompute": lambda g: ours.generate(prompt, args.new_tokens, generator=g, use_cache=False),
        "ours-cache": lambda g: ours.generate(prompt, args.new_tokens, generator=g),
    }
    best: dict[str, float] = {}
    outputs: dict[str, torch.Tensor] = {}
    for _ in range(args.repeats):
        for name, gen in generators.items():  # interleaved, so machine load hits all alike
            t0 = time.perf_counter()
            out = gen(torch.Generator().manual_seed(1337))
            dt = time.perf_counter() - t0
            best[name] = min(best.get(name, float("inf")), dt)
            outputs[name] = out
    same = all(torch.equal(outputs["seed"], o) for o in outputs.values())

    new = args.batch * args.new_tokens
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads; {args.config}: "
          + " ".join(f"{k}={v}" for k, v in cfg.items())
          + f"; batch {args.batch}, {args.new_tokens} new tokens, best of {args.repeats}")
    print(f"  {'generator':<15} {'seconds':>8} {'tokens/s':>9} {'vs seed':>8}")
    for name, dt in best.items():
        print(f"  {name:<15} {dt:8.2f} {new / dt:9.0f} {best['seed'] / dt:7.1f}x")
    print(f"  KV cache vs full recompute (ours): {best['ours-recompute'] / best['ours-cache']:.1f}x")
    print(f"  same tokens from all three: {'yes' if same else 'NO'}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
