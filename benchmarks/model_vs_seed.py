"""Our GPT against benchmarks/seed_model.py (this project's rewrite of the seed's model, nanoGPT of January 2023, not its code) on the same config: one training step each.

A step is forward + backward + AdamW step on the same batch, on CPU (the forward + backward part is
also reported alone: that is the model's own share). The variants run interleaved, one step each
per round, so a busy machine slows them all alike; the figure per variant is the median over the
rounds. All variants of a run share the process's threads.

The ratios that say how the two models compare are like for like: the same precision and the same
AdamW implementation on both sides (float32 with torch's default AdamW, float32 with the fused
AdamW, and with --bf16, bf16 autocast with the fused AdamW). The ratio of each run as it runs by
default on this CPU (ours: bf16 where the CPU computes it, `system.dtype = "auto"`, fused AdamW;
the seed's train.py: float32 on any CPU, torch's default AdamW) is printed after them, as what it
is: a comparison of defaults, not of models.

    python benchmarks/model_vs_seed.py                    # every config, float32 only
    python benchmarks/model_vs_seed.py --config quickstart --bf16 --rounds 40
    python benchmarks/model_vs_seed.py --config gpt2small --bf16 --threads 1 --rounds 6
    python benchmarks/model_vs_seed.py --rounds 30 --compile

Variants:
  seed             benchmarks/seed_model.py: manual softmax attention with a mask buffer, the tanh GELU
                   written out, untied head; torch.optim.AdamW with its defaults (for-loop on CPU)
  ours             nanogpt.models.gpt.GPT (SDPA, fused GELU, tied head, padded vocab); the same AdamW
  seed+fused       the seed's model with AdamW(fused=True)
  ours+fused       ours with AdamW(fused=True), the fused kernel (CPU and CUDA in torch >= 2.4)
  seed+fused+bf16  seed+fused under CPU bfloat16 autocast (with --bf16)
  ours+fused+bf16  ours+fused under CPU bfloat16 autocast (with --bf16), attention in float32 up to
                   CausalSelfAttention.cpu_bf16_in_fp32_up_to positions, as the product runs it
  ...bf16 attn     the same with attention through the bf16 flash kernel at every length (with --bf16)
  ours+compile     ours under torch.compile, fused AdamW (with --compile; compile time reported apart)
  seed+compile     the seed's model under torch.compile, fused AdamW (with --compile)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seed_model import SeedConfig, SeedGPT  # noqa: E402

from common import machine_line  # noqa: E402

from nanogpt.config import sizes  # noqa: E402
from nanogpt.training.hardware import cpu_has_native_bf16  # noqa: E402
from nanogpt.models.gpt import GPT, GPTConfig  # noqa: E402

CONFIGS = {
    # the quickstart: experiments/shakespeare_char.toml (65 characters is the tiny-Shakespeare alphabet)
    "quickstart": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=65, batch_size=12),
    # the seed's own config/train_shakespeare_char.py model (dropout 0.2), at a CPU-sized batch
    "seed-char": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=65, batch_size=4, dropout=0.2),
    # GPT-2's shapes scaled down: BPE vocabulary, 6 x 384, block 256
    "gpt2small": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=50257, batch_size=4),
    # the same at GPT-2's context length, same tokens per step: attention's T x T starts to matter
    "gpt2small-1024": dict(n_layer=6, n_head=6, n_embd=384, block_size=1024, vocab_size=50257, batch_size=1),
}


def make_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, fused: bool, bf16: bool = False):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, betas=(0.9, 0.95), fused=fused or None)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    def step() -> tuple[float, float]:
        """(seconds in forward + backward, seconds in the whole step)."""
        t0 = time.perf_counter()
        with autocast:
            _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t1 = time.perf_counter()
        optimizer.step()
        loss.item()
        return t1 - t0, time.perf_counter() - t0

    return step


def build_variants(cfg: dict, with_compile: bool, with_bf16: bool) -> tuple[dict, dict]:
    shape = {k: cfg[k] for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")}
    shape["dropout"] = cfg.get("dropout", 0.0)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, cfg["vocab_size"], (cfg["batch_size"], cfg["block_size"]), generator=g)
    y = torch.randint(0, cfg["vocab_size"], (cfg["batch_size"], cfg["block_size"]), generator=g)
    padded = sizes.padded_vocab(cfg["vocab_size"], 64)

    def ours() -> GPT:
        torch.manual_seed(0)
        return GPT(GPTConfig(**shape, padded_vocab_size=padded))

    def seed() -> SeedGPT:
        torch.manual_seed(0)
        return SeedGPT(SeedConfig(**shape))

    variants = {
        "seed-rewrite": make_step(seed(), x, y, fused=False),
        "ours": make_step(ours(), x, y, fused=False),
        "seed-rewrite+fused": make_step(seed(), x, y, fused=True),
        "ours+fused": make_step(ours(), x, y, fused=True),
    }
    if with_bf16:
        variants["seed-rewrite+fused+bf16"] = make_step(seed(), x, y, fused=True, bf16=True)
        variants["ours+fused+bf16"] = make_step(ours(), x, y, fused=True, bf16=True)
        bf16_attention = ours()
        for block in bf16_attention.transformer.h:
            block.attn.cpu_bf16_in_fp32_up_to = 0  # every length through the bf16 flash kernel
        variants["...bf16 attn"] = make_step(bf16_attention, x, y, fused=True, bf16=True)
    compile_s = {}
    if with_compile:
        for name, model, fused in (("ours+compile", ours(), True), ("seed-rewrite+compile", seed(), True)):
            step = make_step(torch.compile(model), x, y, fused=fused)
            t0 = time.perf_counter()
            step()  # the first step compiles
            compile_s[name] = time.perf_counter() - t0
            variants[name] = step
    return variants, compile_s


def run(name: str, cfg: dict, rounds: int, warmup: int, with_compile: bool, with_bf16: bool) -> None:
    variants, compile_s = build_variants(cfg, with_compile, with_bf16)
    for step in variants.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {k: [] for k in variants}
    model_times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for k, step in variants.items():  # interleaved: load on the machine hits every variant alike
            fwdbwd, total = step()
            times[k].append(total)
            model_times[k].append(fwdbwd)
    tokens = cfg["batch_size"] * cfg["block_size"]
    base = statistics.median(times["seed-rewrite"])
    base_model = statistics.median(model_times["seed-rewrite"])
    print(f"\n{name}: n_layer={cfg['n_layer']} n_head={cfg['n_head']} n_embd={cfg['n_embd']} "
          f"block_size={cfg['block_size']} vocab={cfg['vocab_size']} batch={cfg['batch_size']} dropout={cfg.get('dropout', 0.0)} "
          f"({tokens} tokens/step), {rounds} rounds, {torch.get_num_threads()} threads")
    print(f"  {'variant':<24} {'ms/step':>9} {'tokens/s':>10} {'vs rewrite':>8}   {'fwd+bwd ms':>10} {'vs rewrite':>8}")
    for k, ts in times.items():
        med = statistics.median(ts)
        med_model = statistics.median(model_times[k])
        extra = f"  (compile: {compile_s[k]:.1f} s)" if k in compile_s else ""
        print(f"  {k:<24} {med * 1e3:9.1f} {tokens / med:10.0f} {base / med:7.2f}x   "
              f"{med_model * 1e3:10.1f} {base_model / med_model:7.2f}x{extra}")
    print("  like for like, ours / seed in tokens/s (same precision, same AdamW, same threads):")
    for label, a, b in LIKE_FOR_LIKE:
        if a in times and b in times:
            print(f"    {label:<34} {statistics.median(times[b]) / statistics.median(times[a]):5.2f}x   "
                  f"(fwd+bwd alone {statistics.median(model_times[b]) / statistics.median(model_times[a]):.2f}x)")
    default_ours = "ours+fused+bf16" if cpu_has_native_bf16() else "ours+fused"
    if default_ours in times:
        print(f"  by default on this CPU, NOT like for like: {default_ours} / seed (float32, default AdamW) "
              f"{base / statistics.median(times[default_ours]):.2f}x")
    else:
        print("  (with --bf16 it also prints the by-default comparison: ours trains in bf16 on this CPU)")


LIKE_FOR_LIKE = (
    ("float32, torch's default AdamW", "ours", "seed-rewrite"),
    ("float32, fused AdamW", "ours+fused", "seed-rewrite+fused"),
    ("bf16 autocast, fused AdamW", "ours+fused+bf16", "seed-rewrite+fused+bf16"),
    ("compiled, float32, fused AdamW", "ours+compile", "seed-rewrite+compile"),
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=[*CONFIGS, "all"], default="all")
    p.add_argument("--rounds", type=int, default=20, help="timed steps per variant (interleaved)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd variants")
    p.add_argument("--bf16", action="store_true", help="also time both models under bfloat16 autocast")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"model vs seed: {machine_line()}; float32 unless a variant says bf16")
    for name in CONFIGS if args.config == "all" else [args.config]:
        run(name, CONFIGS[name], args.rounds, args.warmup, args.compile, args.bf16)


if __name__ == "__main__":
    main()
