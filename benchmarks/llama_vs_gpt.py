"""A llama-kind training step against a GPT step of equal parameter count and tokens, on CPU.

A step is forward + backward + fused AdamW on the same batch. The two models have the same depth,
width, heads, block size, vocabulary and tied head; the llama's SwiGLU width is 8·n_embd/3 rounded
to a multiple of 8, so its three MLP matrices hold GPT's two 4·n_embd ones' weights (the parameter
counts printed differ only by GPT's biases and LayerNorm shifts). The variants run interleaved, one
step each per round, so a busy machine slows both alike; each figure is the median over the rounds.

    python benchmarks/llama_vs_gpt.py                         # every config, float32
    python benchmarks/llama_vs_gpt.py --config quickstart --bf16 --rounds 40
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line  # noqa: E402
from model_vs_seed import make_step  # noqa: E402

from nanogpt.models.llama import Llama, LlamaConfig  # noqa: E402
from nanogpt.models.gpt import GPT, GPTConfig  # noqa: E402

CONFIGS = {
    # experiments/shakespeare_char.toml and experiments/llama_shakespeare_char.toml
    "quickstart": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=65, batch_size=12),
    # GPT-2's shapes scaled down: BPE vocabulary, 6 x 384, block 256
    "gpt2small": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=50257, batch_size=4),
}


def models(cfg: dict) -> tuple[GPT, Llama]:
    sizes = {k: cfg[k] for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")}
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(**sizes))
    torch.manual_seed(0)
    llama = Llama(LlamaConfig(**sizes, n_kv_head=cfg["n_head"], intermediate_size=8 * round(cfg["n_embd"] / 3),
                              tie_embeddings=True))
    return gpt, llama


def run(name: str, cfg: dict, rounds: int, warmup: int, bf16: bool) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, cfg["vocab_size"], (cfg["batch_size"], cfg["block_size"]), generator=g)
    y = torch.randint(0, cfg["vocab_size"], (cfg["batch_size"], cfg["block_size"]), generator=g)
    gpt, llama = models(cfg)
    variants = {"gpt": make_step(gpt, x, y, fused=True, bf16=bf16), "llama": make_step(llama, x, y, fused=True, bf16=bf16)}
    for step in variants.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for k, step in variants.items():  # interleaved: load on the machine hits both alike
            times[k].append(step()[1])
    tokens = cfg["batch_size"] * cfg["block_size"]
    print(f"\n{name}: n_layer={cfg['n_layer']} n_head={cfg['n_head']} n_embd={cfg['n_embd']} block_size={cfg['block_size']} "
          f"vocab={cfg['vocab_size']} batch={cfg['batch_size']} ({tokens} tokens/step), {'bf16 autocast' if bf16 else 'float32'}, "
          f"{rounds} rounds, {torch.get_num_threads()} threads")
    print(f"  {'model':<6} {'params':>11} {'ms/step':>9} {'spread':>13} {'tokens/s':>10}")
    for k, model in (("gpt", gpt), ("llama", llama)):
        med = statistics.median(times[k])
        print(f"  {k:<6} {model.num_params(non_embedding=False):11,d} {med * 1e3:9.1f} "
              f"{min(times[k]) * 1e3:6.1f}-{max(times[k]) * 1e3:<6.1f} {tokens / med:10.0f}")
    ratio = statistics.median(times["llama"]) / statistics.median(times["gpt"])
    print(f"  llama step / gpt step: {ratio:.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=[*CONFIGS, "all"], default="all")
    p.add_argument("--rounds", type=int, default=20, help="timed steps per model (interleaved)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--bf16", action="store_true", help="under bfloat16 autocast instead of float32")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"llama vs gpt: {machine_line()}")
    for name in CONFIGS if args.config == "all" else [args.config]:
        run(name, CONFIGS[name], args.rounds, args.warmup, args.bf16)


if __name__ == "__main__":
    main()
